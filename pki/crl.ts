/** Reading a CRL on the client side: the signature is checked with the CA key before any entry is trusted. */
import { x509 } from "./x509.ts";
import { PkiError } from "./errors.ts";
import { normalizeSerial, pemToDer } from "./encoding.ts";

export interface ParsedCrl {
  revokedSerials: Set<string>;
  thisUpdateMs: number;
  nextUpdateMs: number | null;
  /** The CRL Number (RFC 5280 5.2.3) when present: a newer list has a larger one. */
  crlNumber?: bigint;
}

const OID_CRL_NUMBER = "2.5.29.20";

/** The value of a DER INTEGER that is non-negative, or undefined for anything else. */
function readUnsignedInteger(der: Uint8Array): bigint | undefined {
  if (der.length < 3 || der[0] !== 0x02 || der[1] !== der.length - 2 || der[1] > 21) return undefined;
  if (der[2] & 0x80) return undefined;
  let n = 0n;
  for (const b of der.subarray(2)) n = (n << 8n) | BigInt(b);
  return n;
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
  const ext = crl.extensions.find((e) => e.type === OID_CRL_NUMBER);
  const crlNumber = ext ? readUnsignedInteger(new Uint8Array(ext.value)) : undefined;
  return {
    revokedSerials: new Set(crl.entries.map((e) => normalizeSerial(e.serialNumber))),
    thisUpdateMs: crl.thisUpdate.getTime(),
    nextUpdateMs: crl.nextUpdate ? crl.nextUpdate.getTime() : null,
    ...(crlNumber !== undefined ? { crlNumber } : {}),
  };
}
