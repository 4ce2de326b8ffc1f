/**
 * The revocation cache on a fake scheduler: fails closed before any list, keeps the newest list, reuses it
 * for maxAgeMs, pauses after a failure, bounds a hung fetch, and says each trouble once.
 */
import assert from "node:assert/strict";
import type { ParsedCrl } from "../pki/mod.ts";
import {
  CRL_FETCH_TIMEOUT_MS,
  CRL_RETRY_AFTER_FAILURE_MS,
  RevocationCache,
  type RevocationList,
  RevocationUnknownError,
} from "../client/revocation/mod.ts";
import { FakeScheduler } from "./helpers/fake_scheduler.ts";

function crl(
  n: bigint,
  thisUpdateMs: number,
  serials: string[] = [],
  nextUpdateMs: number | null = null,
): ParsedCrl {
  return { crlNumber: n, thisUpdateMs, nextUpdateMs, revokedSerials: new Set(serials) } as ParsedCrl;
}

function rig(opts: { held?: RevocationList | null; maxAgeMs?: number } = {}) {
  const scheduler = new FakeScheduler();
  const logs: string[] = [];
  const saved: RevocationList[] = [];
  let answer: () => Promise<ParsedCrl> = () => Promise.reject(new Error("phonebook down"));
  let fetches = 0;
  let now = 1_000_000;
  const cache = new RevocationCache({
    fetch: () => {
      fetches++;
      return answer();
    },
    load: () => opts.held ?? null,
    save: (l) => saved.push(l),
    latestNowMs: () => now,
    log: (_level, text) => logs.push(text),
    scheduler,
    maxAgeMs: opts.maxAgeMs ?? 30_000,
  });
  return {
    scheduler,
    cache,
    logs,
    saved,
    fetches: () => fetches,
    answer: (f: () => Promise<ParsedCrl>) => answer = f,
    setNow: (ms: number) => now = ms,
  };
}

Deno.test("revocation cache: no list ever obtained -> every peer is refused, said once", async () => {
  const r = rig();
  await assert.rejects(r.cache.revokedSerials(), RevocationUnknownError);
  await r.scheduler.tick(CRL_RETRY_AFTER_FAILURE_MS);
  await assert.rejects(r.cache.revokedSerials(), RevocationUnknownError);
  assert.equal(r.fetches(), 2);
  assert.equal(r.logs.filter((l) => l.startsWith("no revocation list yet")).length, 1);
  assert.equal(r.cache.isStale(), true);
});

Deno.test("revocation cache: a newer list replaces and is saved; an older one is refused and kept out", async () => {
  const r = rig();
  r.answer(() => Promise.resolve(crl(5n, 1000, ["0a"])));
  assert.deepEqual([...await r.cache.revokedSerials()], ["0a"]);
  assert.equal(r.saved.length, 1);
  assert.equal(r.cache.isRevoked("0a"), true);
  r.answer(() => Promise.resolve(crl(4n, 2000, [])));
  await r.cache.refresh();
  assert.equal(r.cache.list?.crlNumber, 5n, "the replayed lower CRL Number is refused");
  assert.equal(r.saved.length, 1);
  assert.ok(r.logs.some((l) => l.includes("older revocation list")));
  r.answer(() => Promise.resolve(crl(6n, 3000, ["0a", "0b"])));
  await r.cache.refresh();
  assert.equal(r.cache.list?.crlNumber, 6n);
  assert.equal(r.saved.length, 2);
});

Deno.test("revocation cache: reused for maxAgeMs, fetched again after; a failure pauses retries", async () => {
  const r = rig({ maxAgeMs: 10_000 });
  r.answer(() => Promise.resolve(crl(1n, 1000)));
  await r.cache.revokedSerials();
  await r.cache.revokedSerials();
  assert.equal(r.fetches(), 1, "reused while fresh");
  await r.scheduler.tick(10_000);
  r.answer(() => Promise.reject(new Error("down")));
  await r.cache.revokedSerials(); // the held list still answers
  assert.equal(r.fetches(), 2);
  await r.scheduler.tick(CRL_RETRY_AFTER_FAILURE_MS - 1);
  await r.cache.revokedSerials();
  assert.equal(r.fetches(), 2, "no new fetch inside the pause after a failure");
  await r.scheduler.tick(1);
  await r.cache.revokedSerials();
  assert.equal(r.fetches(), 3);
});

Deno.test("revocation cache: a fetch that never answers fails after CRL_FETCH_TIMEOUT_MS; concurrent callers share one", async () => {
  const r = rig();
  r.answer(() => new Promise<ParsedCrl>(() => {}));
  let settled = 0;
  const a = r.cache.revokedSerials().catch((e) => (settled++, e));
  const b = r.cache.revokedSerials().catch((e) => (settled++, e));
  await r.scheduler.tick(CRL_FETCH_TIMEOUT_MS - 1);
  assert.equal(settled, 0);
  await r.scheduler.tick(1);
  assert.ok((await a) instanceof RevocationUnknownError);
  assert.ok((await b) instanceof RevocationUnknownError);
  assert.equal(r.fetches(), 1);
  assert.match(r.logs[0], /timed out/);
});

Deno.test("revocation cache: a list past nextUpdate is kept (availability) and the warning is given once", async () => {
  const held: RevocationList = {
    serials: new Set(["0c"]),
    crlNumber: 2n,
    thisUpdateMs: 0,
    nextUpdateMs: 5000,
  };
  const r = rig({ held });
  r.setNow(10_000);
  assert.equal(r.cache.isStale(), true);
  assert.deepEqual([...await r.cache.revokedSerials()], ["0c"]);
  await r.scheduler.tick(CRL_RETRY_AFTER_FAILURE_MS);
  await r.cache.revokedSerials();
  assert.equal(r.logs.filter((l) => l.includes("past its nextUpdate")).length, 1);
  // A current list ends the stale period; a later stale one is said again.
  r.answer(() => Promise.resolve(crl(3n, 9000, [], 20_000)));
  await r.scheduler.tick(CRL_RETRY_AFTER_FAILURE_MS);
  await r.cache.refresh();
  assert.equal(r.cache.isStale(), false);
  r.setNow(30_000);
  r.answer(() => Promise.reject(new Error("down")));
  await r.cache.refresh();
  assert.equal(r.logs.filter((l) => l.includes("past its nextUpdate")).length, 2);
});
