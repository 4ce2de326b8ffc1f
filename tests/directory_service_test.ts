/**
 * The directory's rules without HTTP, on a clock the test moves: presence expiry, certificate expiry for
 * authentication, token expiry, and the proof that a refused invite-only enrollment never looks at the name
 * (so neither its answer nor its timing can depend on whether the name exists).
 */
import assert from "node:assert/strict";
import { DirectoryService } from "../server/directory.ts";
import type { DirectoryStore } from "../server/store.ts";
import { openDirectoryStore } from "../server/store_open.ts";
import { ApiError } from "../server/errors.ts";
import { createCsr, generateKeyPair, keyFingerprintOf, pemToDer, verifyCrl } from "../pki/mod.ts";
import { RENEW_GRACE_MS } from "../server/limits.ts";

const DAY = 86400_000;
import { makeTestCa } from "./helpers/pki.ts";
import { type Backend, backendTest, freshPostgresDatabase } from "./helpers/directory.ts";

async function setup(backend: Backend, inviteOnly: boolean) {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-svc-" });
  const pg = backend === "postgres" ? await freshPostgresDatabase() : null;
  const store: DirectoryStore = await openDirectoryStore(tmp, { database: pg?.url });
  const ca = await makeTestCa();
  let now = Date.now();
  const calls: string[] = [];
  // Records every store method the service calls.
  const spy = new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        calls.push(String(prop));
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const svc = new DirectoryService({
    store: spy,
    ca: ca.material,
    caFingerprint: ca.fingerprint,
    inviteOnly,
    roughtime: null,
    now: () => now,
  });
  return {
    svc,
    store,
    calls,
    advance: (ms: number) => (now += ms),
    now: () => now,
    close: async () => {
      await store.close();
      await pg?.drop();
      await Deno.remove(tmp, { recursive: true });
    },
  };
}

async function enrollDirect(svc: DirectoryService, name: string, token?: string) {
  const csr = await createCsr(name, await generateKeyPair());
  return await svc.enroll({ name, csr, token });
}

backendTest("a refused invite-only enrollment never consults the name", async (backend) => {
  const s = await setup(backend, true);
  try {
    await s.store.addToken("good-token", s.now(), 60_000);
    await enrollDirect(s.svc, "alice", "good-token");
    const keys = await generateKeyPair();
    const results: { msg: string; calls: string[] }[] = [];
    for (const name of ["alice", "zed"]) {
      s.calls.length = 0;
      try {
        await s.svc.enroll({ name, csr: await createCsr(name, keys), token: "bad-token" });
        assert.fail("accepted");
      } catch (e) {
        assert.ok(e instanceof ApiError);
        assert.equal(e.code, "BAD_TOKEN");
        results.push({ msg: `${e.status} ${e.message}`, calls: [...s.calls] });
      }
    }
    assert.deepEqual(results[0], results[1]);
    assert.ok(!results[0].calls.includes("getUser"), results[0].calls.join(","));
  } finally {
    await s.close();
  }
});

backendTest("tokens expire on the directory's clock", async (backend) => {
  const s = await setup(backend, true);
  try {
    await s.store.addToken("t1", s.now(), 1000);
    s.advance(1001);
    await assert.rejects(
      enrollDirect(s.svc, "alice", "t1"),
      (e: unknown) => (e as ApiError).code === "BAD_TOKEN",
    );
    assert.equal(await s.store.getUser("alice"), null);
    assert.equal(await s.store.tokenState("t1", s.now()), "expired");
  } finally {
    await s.close();
  }
});

backendTest(
  "presence expires after its TTL; an expired certificate no longer authenticates",
  async (backend) => {
    const s = await setup(backend, false);
    try {
      const issued = await enrollDirect(s.svc, "alice");
      const der = pemToDer(issued.certPem, "CERTIFICATE");
      const peer = await s.svc.authenticate(der);
      assert.equal(peer.name, "alice");
      await s.svc.publish(peer, { host: "127.0.0.1", port: 7000, ttlSeconds: 30 });
      assert.equal(s.svc.entry((await s.store.getUser("alice"))!).online, true);
      s.advance(29_000);
      assert.equal(s.svc.entry((await s.store.getUser("alice"))!).online, true);
      s.advance(2_000);
      const e = s.svc.entry((await s.store.getUser("alice"))!);
      assert.equal(e.online, false);
      assert.equal(e.address, null);
      // 30 days later the certificate is dead, whatever is cached.
      s.advance(31 * 86400_000);
      await assert.rejects(
        s.svc.authenticate(der),
        (x: unknown) => (x as ApiError).code === "UNAUTHENTICATED",
      );
    } finally {
      await s.close();
    }
  },
);

backendTest("listing: prefix, pagination and limits", async (backend) => {
  const s = await setup(backend, false);
  try {
    for (const n of ["ann", "anna", "annb", "bob", "anz"]) await enrollDirect(s.svc, n);
    const q = (o: Record<string, string>) => s.svc.list(new URLSearchParams(o));
    assert.deepEqual((await q({ prefix: "ann" })).users.map((u) => u.name), ["ann", "anna", "annb"]);
    const names: string[] = [];
    let cursor: string | null = "";
    while (cursor !== null) {
      const page: { users: { name: string }[]; next: string | null } = await q({
        prefix: "an",
        limit: "2",
        cursor,
      });
      names.push(...page.users.map((u) => u.name));
      cursor = page.next;
    }
    assert.deepEqual(names, ["ann", "anna", "annb", "anz"]);
    const bads: Record<string, string>[] = [
      { limit: "0" },
      { limit: "201" },
      { limit: "x" },
      { prefix: "A" },
      { cursor: "A b" },
    ];
    for (const bad of bads) {
      await assert.rejects(q(bad), (e: unknown) => (e as ApiError).code === "BAD_REQUEST");
    }
  } finally {
    await s.close();
  }
});

backendTest(
  "the CRL lists live revocations and drops them once the certificate has expired",
  async (backend) => {
    const s = await setup(backend, false);
    try {
      const issued = await enrollDirect(s.svc, "alice");
      const peer = await s.svc.authenticate(pemToDer(issued.certPem, "CERTIFICATE"));
      await s.svc.revoke(peer, {});
      const ca = s.svc.ca.certPem;
      assert.ok((await verifyCrl(await s.svc.crlDer(), ca)).revokedSerials.has(issued.serial));
      s.advance(31 * 86400_000);
      const later = await verifyCrl(await s.svc.crlDer(), ca);
      assert.equal(later.revokedSerials.size, 0);
      assert.ok(later.nextUpdateMs! > s.now());
    } finally {
      await s.close();
    }
  },
);

backendTest(
  "renewal grace: a lapsed, unrevoked, current certificate renews its own key within RENEW_GRACE_MS only",
  async (backend) => {
    const renewReq = (der: Uint8Array, csr: string) =>
      ({
        method: "POST",
        path: "/v1/renew",
        query: new URLSearchParams(),
        body: { csr },
        peerCertDer: () => der,
      }) as const;
    const code = async (p: Promise<unknown>) => {
      try {
        await p;
        return "accepted";
      } catch (e) {
        return (e as ApiError).code;
      }
    };
    const s = await setup(backend, false);
    try {
      const keys = await generateKeyPair();
      const issued = await s.svc.enroll({ name: "alice", csr: await createCsr("alice", keys) });
      const der = pemToDer(issued.certPem, "CERTIFICATE");
      const bobKeys = await generateKeyPair();
      const bob = await s.svc.enroll({ name: "bob", csr: await createCsr("bob", bobKeys) });
      // Five weeks away, starting just before the renewal point: lapsed 25 days.
      s.advance(issued.notAfter - s.now() + 25 * DAY);
      assert.equal(await code(s.svc.authenticate(der)), "UNAUTHENTICATED", "no other call accepts it");
      assert.equal(
        await code(s.svc.handle(renewReq(der, await createCsr("alice", await generateKeyPair())))),
        "LAPSED_NEW_KEY",
        "a lapsed certificate cannot bring in a new key",
      );
      const r = await s.svc.handle(renewReq(der, await createCsr("alice", keys)));
      assert.equal(r.status, 201);
      const renewed = r.json as { certPem: string; notAfter: number };
      assert.ok(renewed.notAfter > s.now(), "valid now");
      assert.equal(keyFingerprintOf(renewed.certPem), keyFingerprintOf(issued.certPem), "the same key");
      assert.equal((await s.svc.authenticate(pemToDer(renewed.certPem, "CERTIFICATE"))).name, "alice");
      // The lapsed one is superseded now: it cannot renew twice.
      assert.equal(
        await code(s.svc.handle(renewReq(der, await createCsr("alice", keys)))),
        "UNAUTHENTICATED",
      );
      // Past the grace, bob's (never renewed) certificate cannot renew any more.
      s.advance(RENEW_GRACE_MS - 25 * DAY + DAY);
      const bobDer = pemToDer(bob.certPem, "CERTIFICATE");
      assert.equal(
        await code(s.svc.handle(renewReq(bobDer, await createCsr("bob", bobKeys)))),
        "UNAUTHENTICATED",
      );
    } finally {
      await s.close();
    }
  },
);

backendTest("renewal grace: a revoked certificate never renews, lapsed or not", async (backend) => {
  const s = await setup(backend, false);
  try {
    const keys = await generateKeyPair();
    const issued = await s.svc.enroll({ name: "carol", csr: await createCsr("carol", keys) });
    const der = pemToDer(issued.certPem, "CERTIFICATE");
    await s.svc.revoke(await s.svc.authenticate(der), {});
    s.advance(issued.notAfter - s.now() + DAY);
    await assert.rejects(
      s.svc.handle({
        method: "POST",
        path: "/v1/renew",
        query: new URLSearchParams(),
        body: { csr: await createCsr("carol", keys) },
        peerCertDer: () => der,
      }),
      (e: unknown) => (e as ApiError).code === "UNAUTHENTICATED",
    );
  } finally {
    await s.close();
  }
});
