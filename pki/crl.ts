/** Reading a CRL on the client side: the signature is checked with the CA key before any entry is trusted. */
import { x509 } from "./x509.ts";
import { CertificateError, PkiError } from "./errors.ts";
import { checkCaCertificate, OID_AKI } from "./profile.ts";
import { normalizeSerial, pemToDer } from "./encoding.ts";

export interface ParsedCrl {
  revokedSerials: Set<string>;
  thisUpdateMs: number;
  nextUpdateMs: number | null;
  /** The CRL Number (RFC 5280 5.2.3): a newer list has a larger one. verifyCrl refuses a list without one;
   * parseCrl (for lists already trusted) leaves it out when absent. */
  crlNumber?: bigint;
  /** The signed list as verified (verifyCrl only): kept so it can be verified again later. */
  der?: Uint8Array;
}

const OID_CRL_NUMBER = "2.5.29.20";
/** CRL extensions this reader understands: a critical one outside this set (a delta-CRL indicator, an
 * issuing distribution point that scopes the list) changes what the list means, so the list is refused. */
const UNDERSTOOD_CRL_EXTENSIONS = new Set([OID_CRL_NUMBER, OID_AKI]);

/** The value of a DER INTEGER that is non-negative, or undefined for anything else. */
function readUnsignedInteger(der: Uint8Array): bigint | undefined {
  if (der.length < 3 || der[0] !== 0x02 || der[1] !== der.length - 2 || der[1] > 21) return undefined;
  if (der[2] & 0x80) return undefined;
  let n = 0n;
  for (const b of der.subarray(2)) n = (n << 8n) | BigInt(b);
  return n;
}

/** Parses a DER CRL and verifies it: the CA in `caCertPem` is fit to sign lists (checkCaCertificate, which
 * requires cRLSign), the issuer name is the CA's and the signature verifies with its key, the list carries a
 * CRL Number (RFC 5280 5.2.3: conforming CAs must include it) and no unknown critical extension, and no
 * extension twice. Throws PkiError("BAD_CRL") otherwise. Freshness is the caller's to judge on trusted time. */
export async function verifyCrl(der: Uint8Array, caCertPem: string): Promise<ParsedCrl> {
  const bad = (why: string) => new PkiError("BAD_CRL", `revocation list ${why}`);
  let crl: x509.X509Crl;
  let ca: x509.X509Certificate;
  try {
    crl = new x509.X509Crl(new Uint8Array(der));
    ca = new x509.X509Certificate(pemToDer(caCertPem, "CERTIFICATE"));
    // Force the lazily decoded parts, so malformed input fails here with a typed error.
    void crl.issuer;
    void crl.thisUpdate;
    void crl.nextUpdate;
    for (const e of crl.entries) void e.serialNumber;
    for (const e of crl.extensions) void e.critical;
  } catch {
    throw bad("cannot be parsed");
  }
  try {
    await checkCaCertificate(ca);
  } catch (e) {
    if (e instanceof CertificateError) throw bad(`has an unfit issuer: ${e.message}`);
    throw bad("has an issuer that cannot be decoded");
  }
  let ok = false;
  try {
    ok = crl.issuer === ca.subject && await crl.verify({ publicKey: ca.publicKey });
  } catch {
    ok = false;
  }
  if (!ok) throw bad("is not signed by our CA");
  const seen = new Set<string>();
  for (const e of crl.extensions) {
    if (seen.has(e.type)) throw bad(`repeats extension ${e.type}`);
    seen.add(e.type);
    if (e.critical && !UNDERSTOOD_CRL_EXTENSIONS.has(e.type)) {
      throw bad(`has an unknown critical extension ${e.type}`);
    }
  }
  const parsed = parseCrl(crl);
  if (parsed.crlNumber === undefined) throw bad("has no valid CRL Number");
  return { ...parsed, der: new Uint8Array(der) };
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
