/**
 * A memo of delegations (DELE signed by a long-term key) that verified. A server signs one CERT per online
 * key and repeats it in every reply, so a client verifying many replies skips the second Ed25519 check. Only
 * successes are kept and the key covers every input byte, so a hit is as good as a fresh check: the memo
 * makes verification faster, never different. Process-wide, bounded.
 */
import { verifyWithContext } from "./crypto.ts";
import { toHex } from "./encoding.ts";
import type { HashFamily } from "./merkle.ts";
import { delegationContext } from "./response.ts";

const MAX_CACHED_DELEGATIONS = 1024;
const verified = new Set<string>();

/** Forgets every memoised delegation (the benchmark measures the uncached cost with it). */
export function clearDelegationCache(): void {
  verified.clear();
}

/** True when `sig` is `publicKey`'s signature over `dele` in the delegation context of `family`. */
export function delegationVerified(
  publicKey: Uint8Array,
  family: HashFamily,
  dele: Uint8Array,
  sig: Uint8Array,
): boolean {
  const key = `${family}:${toHex(publicKey)}:${toHex(dele)}:${toHex(sig)}`;
  if (verified.has(key)) return true;
  if (!verifyWithContext(publicKey, delegationContext(family), dele, sig)) return false;
  if (verified.size >= MAX_CACHED_DELEGATIONS) verified.clear();
  verified.add(key);
  return true;
}
