/**
 * Issuing is the one thing that grows the directory for good: every certificate is stored, and once revoked
 * or superseded it stays on the CRL that every peer downloads until it expires. So enrollments and renewals
 * have their own, much slower budget per source, and one user cannot renew in a loop.
 */
import assert from "node:assert/strict";
import { createCsr, generateKeyPair } from "../pki/mod.ts";
import { RENEWALS_PER_DAY } from "../server/limits.ts";
import {
  backendTest,
  call,
  codeOf,
  dumpDatabase,
  enrollRaw,
  type Identity,
  startTestDirectory,
} from "./helpers/directory.ts";

backendTest(
  "enrollments per source have their own budget: beyond the burst, 429 with Retry-After, nothing stored",
  async (backend) => {
    const t = await startTestDirectory({
      backend,
      limits: { ratePerSecond: 10_000, rateBurst: 10_000, enrollPerHour: 1, enrollBurst: 3 },
    });
    try {
      for (const name of ["ann", "ben", "cat"]) await enrollRaw(t.dir, name);
      const before = await dumpDatabase(t);
      const csr = await createCsr("dan", await generateKeyPair("p256"));
      const r = await call(t.dir, "POST", "/v1/enroll", { body: { name: "dan", csr } });
      assert.equal(r.status, 429, r.text);
      assert.equal(codeOf(r), "RATE_LIMITED");
      assert.ok(Number(r.headers.get("retry-after")) > 0);
      assert.equal(await dumpDatabase(t), before);
      // Other requests from the same source are not held back by the issuance budget.
      assert.equal((await call(t.dir, "GET", "/v1/users/ann")).status, 200);
    } finally {
      await t.close();
    }
  },
);

backendTest(
  "one user cannot renew in a loop: at most RENEWALS_PER_DAY certificates a day, then 429",
  async (backend) => {
    const t = await startTestDirectory({
      backend,
      limits: { ratePerSecond: 10_000, rateBurst: 10_000, enrollPerHour: 10_000, enrollBurst: 10_000 },
    });
    try {
      const alice = await enrollRaw(t.dir, "alice");
      let me: Identity = alice;
      let renewed = 0;
      for (let i = 0; i < RENEWALS_PER_DAY + 3; i++) {
        const csr = await createCsr("alice", alice.keys);
        const r = await call(t.dir, "POST", "/v1/renew", { body: { csr }, as: me });
        if (r.status !== 201) {
          assert.equal(r.status, 429, r.text);
          assert.equal(codeOf(r), "RATE_LIMITED");
          break;
        }
        renewed++;
        me = { certPem: String(r.json!.certPem), keyPem: alice.keyPem };
      }
      // The enrollment counts: RENEWALS_PER_DAY certificates in all.
      assert.equal(renewed, RENEWALS_PER_DAY - 1);
      // The last certificate still works for everything else.
      const pub = await call(t.dir, "PUT", "/v1/presence", {
        body: { host: "127.0.0.1", port: 4000, ttlSeconds: 60 },
        as: me,
      });
      assert.equal(pub.status, 200);
    } finally {
      await t.close();
    }
  },
);
