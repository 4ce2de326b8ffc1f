/**
 * The knock: what a dialer sends on a peer connection before its TLS ClientHello, so that a listener can
 * tell a peer who looked it up in the phonebook from a scanner without presenting its certificate (or any
 * byte at all) to the scanner. docs/protocol.md "What a scanner learns".
 *
 * Each listener makes a random secret (KNOCK_SECRET_BYTES) per run and publishes it with its presence; the
 * phonebook hands it out only to authenticated enrolled callers. A knock is
 *
 *   magic "SCK1" (4) | nonce (16, random) | slot (4, big-endian) | tag (16)
 *
 * where slot = floor(unix ms / KNOCK_SLOT_MS) and tag = HMAC-SHA256(secret, KNOCK_CONTEXT || nonce || slot)
 * truncated to 16 bytes. The listener accepts slots within KNOCK_SLOT_SKEW of its own and remembers the
 * nonces of the window (KnockGuard), so a knock seen on the wire cannot be replayed.
 *
 * Pure: no sockets, no timers (the caller gives the time). Used by the chat listener and dialer (client/) and
 * by anything of the phonebook's that dials a listener (server/, e.g. a reachability probe: `makeKnock`).
 */
import { Buffer } from "node:buffer";
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { CodedError } from "../coded_error.ts";

export const KNOCK_MAGIC = new Uint8Array([0x53, 0x43, 0x4b, 0x31]); // "SCK1"
export const KNOCK_NONCE_BYTES = 16;
export const KNOCK_TAG_BYTES = 16;
/** The whole knock: magic, nonce, slot, tag. */
export const KNOCK_BYTES = KNOCK_MAGIC.length + KNOCK_NONCE_BYTES + 4 + KNOCK_TAG_BYTES;
export const KNOCK_SECRET_BYTES = 32;
/** One time slot. */
export const KNOCK_SLOT_MS = 30_000;
/** Slots either side of the listener's own that are accepted: about ±2 minutes of clock difference between
 * two users' machines (wall clocks, not trusted time: a knock only hides the listener, it proves nothing). */
export const KNOCK_SLOT_SKEW = 4;
/** The most nonces a listener remembers at once (about 80 bytes each); beyond that knocks are refused until
 * old slots leave the window, rather than forgetting a nonce that could then be replayed. */
export const KNOCK_MAX_REMEMBERED = 65_536;
/** Domain separation: the secret is used for nothing else, but a tag must never mean anything elsewhere. */
const KNOCK_CONTEXT = new TextEncoder().encode("securechat knock v1\0");

/** A bad argument (a secret of the wrong length or encoding). */
export class KnockError extends CodedError<"BAD_SECRET"> {
  constructor(message: string) {
    super("BAD_SECRET", message);
  }
}

function checkSecret(secret: Uint8Array): void {
  if (!(secret instanceof Uint8Array) || secret.length !== KNOCK_SECRET_BYTES) {
    throw new KnockError(`a knock secret is ${KNOCK_SECRET_BYTES} bytes`);
  }
}

/** A fresh random secret for a listener. */
export function newKnockSecret(): Uint8Array {
  return new Uint8Array(randomBytes(KNOCK_SECRET_BYTES));
}

/** The secret as the phonebook carries it (base64url, no padding). */
export function encodeKnockSecret(secret: Uint8Array): string {
  checkSecret(secret);
  return Buffer.from(secret).toString("base64url");
}

/** The secret from its wire form, or null when `v` is not base64url of exactly KNOCK_SECRET_BYTES bytes. */
export function decodeKnockSecret(v: unknown): Uint8Array | null {
  if (typeof v !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(v)) return null;
  const b = new Uint8Array(Buffer.from(v, "base64url"));
  // 43 characters carry 258 bits: the last two must be zero for the encoding to be the canonical one.
  return b.length === KNOCK_SECRET_BYTES && encodeKnockSecret(b) === v ? b : null;
}

function slotOf(nowMs: number): number {
  return Math.floor(nowMs / KNOCK_SLOT_MS) >>> 0;
}

function tagOf(secret: Uint8Array, nonce: Uint8Array, slotBytes: Uint8Array): Uint8Array {
  const h = createHmac("sha256", secret);
  h.update(KNOCK_CONTEXT);
  h.update(nonce);
  h.update(slotBytes);
  return new Uint8Array(h.digest()).subarray(0, KNOCK_TAG_BYTES);
}

/** The knock for the listener whose secret is `secret`, at `nowMs` (wall clock), with a random nonce
 * (tests may give one). Throws KnockError for a secret of the wrong length. */
export function makeKnock(
  secret: Uint8Array,
  nowMs: number = Date.now(),
  nonce: Uint8Array = new Uint8Array(randomBytes(KNOCK_NONCE_BYTES)),
): Uint8Array {
  checkSecret(secret);
  if (nonce.length !== KNOCK_NONCE_BYTES) throw new RangeError(`a knock nonce is ${KNOCK_NONCE_BYTES} bytes`);
  const out = new Uint8Array(KNOCK_BYTES);
  out.set(KNOCK_MAGIC, 0);
  out.set(nonce, KNOCK_MAGIC.length);
  const slotAt = KNOCK_MAGIC.length + KNOCK_NONCE_BYTES;
  new DataView(out.buffer).setUint32(slotAt, slotOf(nowMs));
  out.set(tagOf(secret, nonce, out.subarray(slotAt, slotAt + 4)), slotAt + 4);
  return out;
}

/** False as soon as the bytes received so far cannot start a knock (e.g. a TLS ClientHello): the listener
 * closes at once instead of waiting for KNOCK_BYTES. */
export function couldBeKnock(prefix: Uint8Array): boolean {
  const n = Math.min(prefix.length, KNOCK_MAGIC.length);
  for (let i = 0; i < n; i++) if (prefix[i] !== KNOCK_MAGIC[i]) return false;
  return true;
}

export type KnockRefusal = "MAGIC" | "TAG" | "STALE" | "REPLAY" | "FULL";

export type KnockVerdict = { ok: true } | { ok: false; reason: KnockRefusal };

/** A listener's check of knocks: the tag under its secret, the slot within the window, and each nonce
 * accepted at most once while its slot is in the window. */
export class KnockGuard {
  #secret: Uint8Array;
  /** Accepted nonces (hex) by slot; slots leave when they fall out of the window. */
  readonly #seen = new Map<number, Set<string>>();
  #remembered = 0;
  readonly #max: number;

  /** `maxRemembered`: default KNOCK_MAX_REMEMBERED (tests shrink it). */
  constructor(secret: Uint8Array, opts: { maxRemembered?: number } = {}) {
    checkSecret(secret);
    this.#secret = secret;
    this.#max = opts.maxRemembered ?? KNOCK_MAX_REMEMBERED;
  }

  /** Checks the first KNOCK_BYTES of a connection at `nowMs`; an accepted knock is remembered. */
  check(knock: Uint8Array, nowMs: number = Date.now()): KnockVerdict {
    if (knock.length < KNOCK_BYTES || !couldBeKnock(knock)) return { ok: false, reason: "MAGIC" };
    const nonce = knock.subarray(KNOCK_MAGIC.length, KNOCK_MAGIC.length + KNOCK_NONCE_BYTES);
    const slotAt = KNOCK_MAGIC.length + KNOCK_NONCE_BYTES;
    const slotBytes = knock.subarray(slotAt, slotAt + 4);
    const tag = knock.subarray(slotAt + 4, KNOCK_BYTES);
    // The tag first: a stranger's bytes say nothing about slots or nonces, and must not fill the memory.
    if (!timingSafeEqual(tagOf(this.#secret, nonce, slotBytes), tag)) return { ok: false, reason: "TAG" };
    const slot = new DataView(slotBytes.buffer, slotBytes.byteOffset, 4).getUint32(0);
    const mine = slotOf(nowMs);
    this.#forgetBefore(mine - KNOCK_SLOT_SKEW);
    if (Math.abs(slot - mine) > KNOCK_SLOT_SKEW) return { ok: false, reason: "STALE" };
    const key = Buffer.from(nonce).toString("hex");
    const set = this.#seen.get(slot);
    if (set?.has(key)) return { ok: false, reason: "REPLAY" };
    if (this.#remembered >= this.#max) return { ok: false, reason: "FULL" };
    if (set) set.add(key);
    else this.#seen.set(slot, new Set([key]));
    this.#remembered++;
    return { ok: true };
  }

  #forgetBefore(oldest: number): void {
    for (const [slot, set] of this.#seen) {
      if (slot >= oldest) continue;
      this.#remembered -= set.size;
      this.#seen.delete(slot);
    }
  }

  /** Nonces remembered now (tests). */
  get remembered(): number {
    return this.#remembered;
  }
}
