/** Base64 and hex helpers (standard alphabet, as malfeasance reports and server specs use). */
import { Buffer } from "node:buffer";

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

export function toBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64");
}

/** Strict base64 decoding: throws TypeError on anything that is not canonical-looking base64. */
export function fromBase64(s: string): Uint8Array {
  if (s.length % 4 !== 0 || !BASE64_RE.test(s)) throw new TypeError("not base64");
  return new Uint8Array(Buffer.from(s, "base64"));
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}
