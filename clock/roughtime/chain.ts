/**
 * Several servers: parallel queries (fast, for the clock) and chained queries (each nonce derived from the
 * previous reply, so the sequence proves the order the replies were made in). Chained results are what a
 * malfeasance report is made of.
 */
import type { ServerSpec } from "../types.ts";
import { NONCE_SIZE_GOOGLE, NONCE_SIZE_IETF } from "./constants.ts";
import { randomBytes, sha512 } from "./crypto.ts";
import { RoughtimeError } from "./errors.ts";
import { DEFAULT_QUERY_TIMEOUT_MS, type QueryResult, queryServer } from "./client.ts";
import { familyOf } from "./request.ts";
import type { HashFamily } from "./merkle.ts";

export type ServerOutcome =
  | { server: ServerSpec; ok: true; result: QueryResult; rand: Uint8Array | null }
  | { server: ServerSpec; ok: false; error: RoughtimeError };

export interface MultiQueryOptions {
  /** Bound on the whole call. Default 1500 ms. */
  timeoutMs?: number;
  monotonicNow?: () => number;
  /** Abandons every query still running (their outcomes fail with ABORTED). */
  signal?: AbortSignal;
}

function asRoughtimeError(e: unknown): RoughtimeError {
  return e instanceof RoughtimeError
    ? e
    : new RoughtimeError("BAD_VALUE", e instanceof Error ? e.message : String(e));
}

/** Queries every server at once, each with the whole budget. */
export async function queryParallel(
  servers: ServerSpec[],
  opts: MultiQueryOptions = {},
): Promise<ServerOutcome[]> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
  return await Promise.all(servers.map(async (server): Promise<ServerOutcome> => {
    try {
      const result = await queryServer(server, {
        timeoutMs,
        monotonicNow: opts.monotonicNow,
        signal: opts.signal,
      });
      return { server, ok: true, result, rand: null };
    } catch (e) {
      return { server, ok: false, error: asRoughtimeError(e) };
    }
  }));
}

/** The chained nonce (draft 19 section 8.2; Google's own chaining for Google-Roughtime). */
export function chainedNonce(family: HashFamily, previousResponse: Uint8Array, rand: Uint8Array): Uint8Array {
  return family === "ietf"
    ? sha512(previousResponse, rand).subarray(0, NONCE_SIZE_IETF)
    : sha512(sha512(previousResponse), rand);
}

export function randSize(family: HashFamily): number {
  return family === "ietf" ? NONCE_SIZE_IETF : NONCE_SIZE_GOOGLE;
}

export interface ChainOptions extends MultiQueryOptions {
  /** How many times to walk the server list. Two rounds catch a server that is ahead as well as one that is
   * behind: a lie is only provable against a reply made after it. Default 1. */
  rounds?: number;
}

/** Queries servers one after the other, each nonce chained to the previous verified reply. A server that
 * fails is skipped (the chain continues from the last good reply). Bounded by `timeoutMs` overall. */
export async function queryChain(servers: ServerSpec[], opts: ChainOptions = {}): Promise<ServerOutcome[]> {
  const mono = opts.monotonicNow ?? (() => performance.now());
  const deadline = mono() + (opts.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS);
  const order: ServerSpec[] = [];
  for (let r = 0; r < (opts.rounds ?? 1); r++) order.push(...servers);
  const outcomes: ServerOutcome[] = [];
  let previous: Uint8Array | null = null;
  for (let i = 0; i < order.length; i++) {
    const server = order[i];
    const remaining = deadline - mono();
    if (opts.signal?.aborted) {
      outcomes.push({ server, ok: false, error: new RoughtimeError("ABORTED", "chain abandoned") });
      continue;
    }
    if (remaining <= 0) {
      outcomes.push({
        server,
        ok: false,
        error: new RoughtimeError("TIMEOUT", "no time left in the chain's budget"),
      });
      continue;
    }
    const family = familyOf(server.version ?? "rfc");
    const rand: Uint8Array | null = previous ? randomBytes(randSize(family)) : null;
    const nonce = previous && rand ? chainedNonce(family, previous, rand) : undefined;
    try {
      const result = await queryServer(server, {
        timeoutMs: remaining / (order.length - i),
        nonce,
        monotonicNow: mono,
        signal: opts.signal,
      });
      outcomes.push({ server, ok: true, result, rand });
      previous = result.response;
    } catch (e) {
      outcomes.push({ server, ok: false, error: asRoughtimeError(e) });
    }
  }
  return outcomes;
}
