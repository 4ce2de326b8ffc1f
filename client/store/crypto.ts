/**
 * At-rest encryption of expiring messages: AES-256-GCM with a fresh random key per message. The key lives in
 * its own row and is deleted with the message, so once both rows are securely deleted the ciphertext (which
 * may linger in a free page or an old WAL frame) cannot be decrypted.
 */
import crypto from "node:crypto";

export const MESSAGE_KEY_BYTES = 32;
export const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface Sealed {
  iv: Uint8Array;
  /** Ciphertext followed by the 16-byte tag. */
  body: Uint8Array;
}

export function newMessageKey(): Uint8Array {
  return new Uint8Array(crypto.randomBytes(MESSAGE_KEY_BYTES));
}

/** `aad` ties the ciphertext to its row (peer and id), so rows cannot be swapped. */
export function seal(key: Uint8Array, plaintext: string, aad: string): Sealed {
  const iv = new Uint8Array(crypto.randomBytes(IV_BYTES));
  const c = crypto.createCipheriv("aes-256-gcm", key, iv);
  c.setAAD(new TextEncoder().encode(aad));
  const out = new Uint8Array([...c.update(plaintext, "utf8"), ...c.final(), ...c.getAuthTag()]);
  return { iv, body: out };
}

/** Throws when the key, iv, aad or ciphertext do not match. */
export function open(key: Uint8Array, s: Sealed, aad: string): string {
  if (s.body.length < TAG_BYTES) throw new Error("sealed body too short");
  const d = crypto.createDecipheriv("aes-256-gcm", key, s.iv);
  d.setAAD(new TextEncoder().encode(aad));
  d.setAuthTag(s.body.subarray(s.body.length - TAG_BYTES));
  const a = d.update(s.body.subarray(0, s.body.length - TAG_BYTES));
  const b = d.final();
  return new TextDecoder().decode(new Uint8Array([...a, ...b]));
}
