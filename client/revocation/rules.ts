/**
 * Revocation list rules of the chat engine, kept free of I/O so they can be tested without a phonebook.
 *
 * The engine fails closed on revocation: it never judges a peer without a CRL it verified once, never lets an
 * older CRL (a replay by whoever sits between us and the phonebook, or a cached copy) replace a newer one, and
 * keeps using a CRL past its nextUpdate when no newer one can be had (availability), saying so once.
 */
import { CodedError } from "../../coded_error.ts";

/** A verified CRL as the engine keeps it (and persists it in the store). */
export interface RevocationList {
  /** Revoked serials, normalised hex (pki/crl.ts). */
  serials: ReadonlySet<string>;
  /** The CRL Number (RFC 5280 5.2.3), null when the CRL carries none. */
  crlNumber: bigint | null;
  thisUpdateMs: number;
  nextUpdateMs: number | null;
  /** The signed CRL these contents were verified from: what the store keeps and verifies again at start. */
  der?: Uint8Array;
}

/** How a freshly fetched CRL relates to the one we hold. */
export type CrlOrder = "newer" | "same" | "older";

/**
 * Orders `fresh` against `held`. Older means a lower CRL Number, or (whatever the numbers say) an earlier
 * thisUpdate: either is enough to refuse it, since the CA only moves both forward. A list whose number is
 * missing is judged on thisUpdate alone.
 */
export function compareCrl(held: RevocationList, fresh: RevocationList): CrlOrder {
  if (held.crlNumber !== null && fresh.crlNumber !== null && fresh.crlNumber < held.crlNumber) return "older";
  if (fresh.thisUpdateMs < held.thisUpdateMs) return "older";
  if (held.crlNumber !== null && fresh.crlNumber !== null && fresh.crlNumber > held.crlNumber) return "newer";
  if (fresh.thisUpdateMs > held.thisUpdateMs) return "newer";
  return "same";
}

/** True when the list may be past its nextUpdate at `latestNowMs` (the latest the time can be). A list without
 * nextUpdate never goes stale by this rule. */
export function isCrlStale(crl: RevocationList, latestNowMs: number): boolean {
  return crl.nextUpdateMs !== null && latestNowMs > crl.nextUpdateMs;
}

/** Why a peer could not be judged: no CRL was ever obtained (fresh client, phonebook unreachable). The stable
 * `code` reaches the dialer as the engine error `PEER_REVOCATION_UNKNOWN` and the listener's refusal log. */
export class RevocationUnknownError extends CodedError<"REVOCATION_UNKNOWN"> {
  constructor() {
    super(
      "REVOCATION_UNKNOWN",
      "no revocation list was ever obtained from the phonebook: peers cannot be checked yet",
    );
  }
}
