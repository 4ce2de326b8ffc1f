/** Reading a CRL on the client side: the signature is checked with the CA key before any entry is trusted. */
import { x509 } from "./x509.ts";
import { PkiError } from "./errors.ts";
import { normalizeSerial, pemToDer } from "./encoding.ts";

export interface ParsedCrl {
  revokedSerials: Set<string>;
  thisUpdateMs: number;
  nextUpdateMs: number | null;
}

/** Parses a DER CRL and verifies it was signed by the CA in `caCertPem` (issuer name and signature).
 * Throws PkiError("BAD_CRL") otherwise. */
export async function verifyCrl(der: Uint8Array, caCertPem: string): Promise<ParsedCrl> {
  let crl: x509.X509Crl;
  let ca: x509.X509Certificate;
  try {
    crl = new x509.X509Crl(new Uint8Array(der));
    ca = new x509.X509Certificate(pemToDer(caCertPem, "CERTIFICATE"));
  } catch {
    throw new PkiError("BAD_CRL", "revocation list cannot be parsed");
  }
  let ok = false;
  try {
    ok = crl.issuer === ca.subject && await crl.verify({ publicKey: ca.publicKey });
  } catch {
    ok = false;
  }
  if (!ok) throw new PkiError("BAD_CRL", "revocation list is not signed by our CA");
  return parseCrl(crl);
}

/** Reads the entries of an already verified CRL. */
export function parseCrl(crl: x509.X509Crl): ParsedCrl {
  return {
    revokedSerials: new Set(crl.entries.map((e) => normalizeSerial(e.serialNumber))),
    thisUpdateMs: crl.thisUpdate.getTime(),
    nextUpdateMs: crl.nextUpdate ? crl.nextUpdate.getTime() : null,
  };
}
