/** Internal to pki/: key identifiers (RFC 5280 4.2.1.2 method 1) and SubjectPublicKeyInfo bytes. */
import { createHash } from "node:crypto";

/** A key as the CA takes it: a CryptoKey, or the DER SubjectPublicKeyInfo (what a checked CSR carries, which
 * spares exporting the key again). */
export type IssuableKey = CryptoKey | Uint8Array<ArrayBufferLike>;

export async function spkiBytes(publicKey: IssuableKey): Promise<Uint8Array<ArrayBuffer>> {
  return publicKey instanceof Uint8Array
    ? new Uint8Array(publicKey)
    : new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
}

/** The contents of the subjectPublicKey BIT STRING of a DER SubjectPublicKeyInfo (after the unused-bits
 * octet): SEQUENCE { AlgorithmIdentifier, BIT STRING }. */
export function subjectPublicKeyBits(spki: Uint8Array): Uint8Array {
  let p = 0;
  const header = (): { tag: number; len: number } => {
    const tag = spki[p++];
    let len = spki[p++];
    if (len & 0x80) {
      const n = len & 0x7f;
      len = 0;
      for (let i = 0; i < n; i++) len = (len << 8) | spki[p++];
    }
    return { tag, len };
  };
  if (header().tag !== 0x30) throw new TypeError("SPKI is not a SEQUENCE");
  const alg = header();
  p += alg.len;
  const bits = header();
  if (bits.tag !== 0x03 || p + bits.len > spki.length) throw new TypeError("SPKI has no BIT STRING");
  return spki.subarray(p + 1, p + bits.len);
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING. */
export function keyIdentifierBytes(spki: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(createHash("sha1").update(subjectPublicKeyBits(spki)).digest());
}
