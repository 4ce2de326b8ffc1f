/** PEM/DER conversion, fingerprints and serial numbers: small pure helpers shared by the CA and its users. */
import { createHash } from "node:crypto";
import { PkiError } from "./errors.ts";
import { x509 } from "./x509.ts";

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END \1-----/g;

/** Every PEM block in `text` with the given label, decoded. Throws PkiError("BAD_PEM") on broken base64. */
export function pemBlocks(text: string, label: string): Uint8Array<ArrayBuffer>[] {
  const out: Uint8Array<ArrayBuffer>[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    if (m[1] !== label) continue;
    out.push(fromBase64(m[2].replace(/\s+/g, "")));
  }
  return out;
}

/** The single PEM block with `label` in `text`; throws PkiError("BAD_PEM") unless there is exactly one. */
export function pemToDer(text: string, label: string): Uint8Array<ArrayBuffer> {
  const blocks = pemBlocks(text, label);
  if (blocks.length !== 1) {
    throw new PkiError("BAD_PEM", `expected exactly one PEM block "${label}", found ${blocks.length}`);
  }
  return blocks[0];
}

export function derToPem(der: Uint8Array, label: string): string {
  const b64 = toBase64(der);
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function fromBase64(b64: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) {
    throw new PkiError("BAD_PEM", "invalid base64");
  }
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** SHA-256 of the certificate's DER as 64 lowercase hex characters. Accepts PEM text or DER bytes. */
export function fingerprintOf(cert: string | Uint8Array): string {
  const der = typeof cert === "string" ? pemToDer(cert, "CERTIFICATE") : cert;
  return createHash("sha256").update(der).digest("hex");
}

/** Accepts a SHA-256 fingerprint with or without colons/spaces, in any case; returns 64 lowercase hex.
 * Throws PkiError("BAD_FINGERPRINT") for anything else. */
export function normalizeFingerprint(input: string): string {
  if (typeof input !== "string") throw new PkiError("BAD_FINGERPRINT", "fingerprint must be a string");
  const s = input.trim().replace(/^sha-?256[:= ]?/i, "").replace(/[:\s]/g, "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(s)) {
    throw new PkiError("BAD_FINGERPRINT", "a SHA-256 fingerprint is 64 hex characters (colons allowed)");
  }
  return s;
}

/** Serial numbers are compared as lowercase hex without leading zeros (DER may add a 00 byte to keep the
 * integer positive; @peculiar/x509 and the CRL both report the raw bytes). */
export function normalizeSerial(hex: string): string {
  const s = hex.toLowerCase().replace(/^0+/, "");
  return s === "" ? "0" : s;
}

/** A random positive 128-bit serial (RFC 5280 4.1.2.2: at most 20 octets, positive). The top bits are fixed
 * to 01 so the DER encoding is always exactly 16 bytes with no sign padding. */
export function randomSerial(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0] & 0x3f) | 0x40;
  return toHex(b);
}

/** SHA-256 of the certificate's SubjectPublicKeyInfo DER (the key, not the certificate) as 64 lowercase hex:
 * the identity a peer is pinned to, which stays the same when the certificate is renewed with the same key
 * (RFC 7469 2.4 pins the same bytes). Accepts PEM text or DER bytes; throws PkiError("BAD_PEM") for PEM
 * that is not one certificate block, and the parser's error for DER that is not a certificate. */
export function keyFingerprintOf(cert: string | Uint8Array): string {
  const der = typeof cert === "string" ? pemToDer(cert, "CERTIFICATE") : cert;
  const spki = new x509.X509Certificate(new Uint8Array(der)).publicKey.rawData;
  return createHash("sha256").update(new Uint8Array(spki)).digest("hex");
}
