/**
 * The contract between `clock/` and its users (server/, client/). Implementations live beside this file;
 * other folders import only from `clock/mod.ts`.
 */

/** Roughtime protocol families we speak. "rfc" = RFC 10049 (VER 0x00000001), "draft" = drafts 12-19
 * (VER 0x8000000c), "google" = Google-Roughtime (no VER, 64-byte nonce, microseconds). */
export type RoughtimeVersion = "rfc" | "draft" | "google";

/** One Roughtime server a client trusts: where it is and its long-term Ed25519 public key (32 bytes). */
export interface ServerSpec {
  name: string;
  host: string;
  port: number;
  publicKey: Uint8Array;
  /** Version to ask for; "rfc" (offering rfc+draft) when absent. */
  version?: RoughtimeVersion;
  /** "udp" when absent. TCP (RFC 10049 framing) works for the IETF versions only. */
  transport?: "udp" | "tcp";
}

export type TimeState = "verified" | "stale" | "unverified";

/** An interval that certainly contains true Unix time in milliseconds. */
export interface TrustedTime {
  earliestMs: number;
  latestMs: number;
  /** Best estimate (the middle of the interval). */
  nowMs: number;
}

export interface TimeStatus {
  state: TimeState;
  /** null while unverified. */
  time: TrustedTime | null;
  /** Half-width of the interval in ms; null while unverified. */
  uncertaintyMs: number | null;
  /** Servers configured / that answered with a valid signed reply / that agree with the combined answer. */
  configured: number;
  answered: number;
  agreeing: number;
  /** True when the time rests on one server only (verified, but not cross-checked). */
  singleSource: boolean;
  /** Unix ms (on trusted time) of the last successful verification, or null. */
  lastVerifiedMs: number | null;
  /** Replies in the last sync outside the agreeing group (0 when all agreed). Absent in older producers. */
  disagreeing?: number;
  /** True once a background chain has proven that a server lied (TrustedClock.lastReport()). */
  reportAvailable?: boolean;
}

/** A signed Roughtime answer to a nonce derived from some data: proof that the data existed by that time. */
export interface TimeProof {
  version: RoughtimeVersion;
  /** base64 long-term public key of the server that answered. */
  publicKey: string;
  /** base64 32 random bytes mixed with the data into the nonce: nonce = SHA-512(data || rand)[:32]
   * (Google: SHA-512(data || rand), 64 bytes). */
  rand: string;
  /** base64 request packet and response packet, as on the wire. */
  request: string;
  response: string;
}
