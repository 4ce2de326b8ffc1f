/**
 * Internal to pki/: the little DER the CA's hot path needs (X.690), written and read by hand because the
 * general ASN.1 library costs several times the signature per certificate. Only definite, minimal lengths
 * are read or written; the reader refuses anything else, so what it accepts is plain DER.
 */

/** DER tags used by the certificate template and the CSR reader. */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
  /** [0] constructed: the TBSCertificate version, the CSR attributes. */
  CONTEXT_0: 0xa0,
  /** [3] constructed: the TBSCertificate extensions. */
  CONTEXT_3: 0xa3,
  /** [2] primitive: a dNSName in GeneralNames. */
  CONTEXT_2_PRIMITIVE: 0x82,
} as const;

/** A DER element read from a buffer: its tag, where its contents lie, and the whole encoding. */
export interface DerElement {
  tag: number;
  /** The contents octets (a view into the input). */
  value: Uint8Array;
  /** Tag, length and contents (a view into the input). */
  whole: Uint8Array;
}

/** Input that is not the DER the reader expects. */
export class DerError extends Error {}

/** Reads the element at `offset`; throws DerError for a truncated, indefinite or non-minimal length and for
 * high tag numbers (none of ours use them). */
export function readElement(buf: Uint8Array, offset: number): DerElement {
  let p = offset;
  if (p + 2 > buf.length) throw new DerError("truncated");
  const tag = buf[p++];
  if ((tag & 0x1f) === 0x1f) throw new DerError("high tag number");
  let len = buf[p++];
  if (len & 0x80) {
    const n = len & 0x7f;
    // 0x80 is BER's indefinite length; four octets are far beyond anything a CSR needs.
    if (n === 0 || n > 3) throw new DerError("unsupported length");
    if (p + n > buf.length) throw new DerError("truncated");
    if (buf[p] === 0) throw new DerError("non-minimal length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p++];
    if (len < 0x80) throw new DerError("non-minimal length");
  }
  if (p + len > buf.length) throw new DerError("truncated");
  return { tag, value: buf.subarray(p, p + len), whole: buf.subarray(offset, p + len) };
}

/** The elements that make up `contents` exactly (a SEQUENCE's or SET's body); throws DerError otherwise. */
export function readChildren(contents: Uint8Array): DerElement[] {
  const out: DerElement[] = [];
  let p = 0;
  while (p < contents.length) {
    const e = readElement(contents, p);
    out.push(e);
    p += e.whole.length;
  }
  return out;
}

/** Throws DerError unless every constructed element inside `e`, at any depth, parses exactly (what a general
 * BER parser would insist on before handing the structure out). */
export function checkWellFormed(e: DerElement, depth = 0): void {
  if (depth > 16) throw new DerError("nested too deeply");
  if ((e.tag & 0x20) === 0) return;
  for (const c of readChildren(e.value)) checkWellFormed(c, depth + 1);
}

/** One element with a tag and its contents, in DER. */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  let n = 0;
  for (const p of parts) n += p.length;
  const head = n < 0x80 ? 2 : n < 0x100 ? 3 : n < 0x10000 ? 4 : 5;
  const out = new Uint8Array(head + n);
  out[0] = tag;
  if (n < 0x80) out[1] = n;
  else if (n < 0x100) out.set([0x81, n], 1);
  else if (n < 0x10000) out.set([0x82, n >> 8, n & 0xff], 1);
  else out.set([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff], 1);
  let p = head;
  for (const part of parts) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}

/** DER INTEGER of an unsigned big-endian magnitude (leading zero octets dropped, one 00 added when the top bit
 * is set so that it stays positive). */
export function unsignedInteger(magnitude: Uint8Array): Uint8Array<ArrayBuffer> {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  const m = magnitude.subarray(i);
  return m[0] & 0x80 ? tlv(TAG.INTEGER, new Uint8Array([0]), m) : tlv(TAG.INTEGER, m);
}

const ASCII = new TextEncoder();

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, in UTC ("Z"). */
export function time(ms: number): Uint8Array<ArrayBuffer> {
  const d = new Date(ms);
  const y = d.getUTCFullYear();
  const two = (n: number) => String(n).padStart(2, "0");
  const rest = two(d.getUTCMonth() + 1) + two(d.getUTCDate()) + two(d.getUTCHours()) +
    two(d.getUTCMinutes()) + two(d.getUTCSeconds()) + "Z";
  if (y >= 1950 && y <= 2049) return tlv(TAG.UTC_TIME, ASCII.encode(two(y % 100) + rest));
  return tlv(TAG.GENERALIZED_TIME, ASCII.encode(String(y).padStart(4, "0") + rest));
}

/** Bytes equal? */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Encoded object identifiers the hot path compares against or writes (contents of the OID TLV included). */
export const OID_DER = {
  /** 2.5.4.3 commonName */
  commonName: new Uint8Array([0x06, 0x03, 0x55, 0x04, 0x03]),
  /** 2.5.29.17 subjectAltName */
  subjectAltName: new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x11]),
  /** 2.5.29.14 subjectKeyIdentifier */
  subjectKeyIdentifier: new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x0e]),
} as const;

/** AlgorithmIdentifier DER of the two signature algorithms the CA and its users sign with: ecdsa-with-SHA256
 * (RFC 5758 3.2: parameters absent) and Ed25519 (RFC 8410 3: parameters absent). */
export const SIGNATURE_ALGORITHM_DER = {
  p256: new Uint8Array([0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
  ed25519: new Uint8Array([0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]),
} as const;
