/**
 * The phonebook and knock secrets (docs/protocol.md "What a scanner learns"): a user publishes its
 * listener's secret with its presence; the phonebook lists it only in a single-user look-up answered to an
 * enrolled caller with a current certificate, and only while the user is online. Never to a caller without
 * a certificate, with one from another CA, or with a revoked one; never in a listing; a malformed secret is
 * refused and changes nothing; withdrawing forgets it.
 */
import assert from "node:assert/strict";
import {
  backendTest,
  call,
  codeOf,
  dumpDatabase,
  enrollRaw,
  startTestDirectory,
} from "./helpers/directory.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";
import { createInviteToken } from "../server/mod.ts";
import { encodeKnockSecret, newKnockSecret } from "../contract/mod.ts";

const presence = (knock: unknown) => ({ host: "192.0.2.10", port: 4000, ttlSeconds: 60, knock });

backendTest(
  "knock: the secret goes only to enrolled callers, never to strangers or in a listing",
  async (backend) => {
    const t = await startTestDirectory({ backend });
    try {
      const alice = await enrollRaw(t.dir, "alice");
      const bob = await enrollRaw(t.dir, "bob");
      const carol = await enrollRaw(t.dir, "carol");
      const secret = encodeKnockSecret(newKnockSecret());

      const before = await dumpDatabase(t);
      for (const bad of ["short", 5, "A".repeat(42) + "B", "A".repeat(44), null]) {
        const r = await call(t.dir, "PUT", "/v1/presence", { body: presence(bad), as: bob });
        assert.equal(r.status, 400, `knock ${JSON.stringify(bad)}`);
        assert.equal(codeOf(r), "BAD_REQUEST");
      }
      assert.equal(await dumpDatabase(t), before, "a refused publication changes nothing");

      assert.equal(
        (await call(t.dir, "PUT", "/v1/presence", { body: presence(secret), as: bob })).status,
        200,
      );
      // Stored, so every node of a multi-node phonebook lists the same one.
      assert.ok((await dumpDatabase(t)).includes(secret));

      const asAlice = await call(t.dir, "GET", "/v1/users/bob", { as: alice });
      assert.equal(asAlice.status, 200);
      assert.equal(asAlice.json!.knock, secret, "an enrolled caller gets the secret");
      assert.equal((await call(t.dir, "GET", "/v1/me", { as: bob })).json!.knock, secret, "the user itself");

      const anonymous = await call(t.dir, "GET", "/v1/users/bob");
      assert.equal(anonymous.status, 200, "an open phonebook still answers the entry");
      assert.equal(anonymous.json!.online, true);
      assert.equal(anonymous.json!.knock, null, "but not the secret to a caller without a certificate");
      assert.ok(!anonymous.text.includes(secret));

      // A certificate naming an enrolled user, from another CA.
      const otherCa = await makeTestCa({ name: "another CA" });
      const forged = await makeTestLeaf(otherCa, "alice");
      const r1 = await call(t.dir, "GET", "/v1/users/bob", { as: forged });
      assert.equal(r1.status, 200);
      assert.ok(!r1.text.includes(secret), "not to a certificate from another CA");

      // A revoked certificate.
      assert.equal((await call(t.dir, "POST", "/v1/revoke", { body: {}, as: carol })).status, 200);
      const r2 = await call(t.dir, "GET", "/v1/users/bob", { as: carol });
      assert.equal(r2.status, 200);
      assert.ok(!r2.text.includes(secret), "not to a revoked certificate");

      const list = await call(t.dir, "GET", "/v1/users", { as: alice });
      assert.equal(list.status, 200);
      assert.ok(!list.text.includes(secret), "never in a listing");

      // Withdrawn: offline, and the secret is forgotten.
      assert.equal((await call(t.dir, "DELETE", "/v1/presence", { as: bob })).status, 200);
      const gone = await call(t.dir, "GET", "/v1/users/bob", { as: alice });
      assert.equal(gone.json!.knock, null);
      assert.ok(!(await dumpDatabase(t)).includes(secret), "withdrawn: the secret is gone from the store");
    } finally {
      await t.close();
    }
  },
);

backendTest("knock: an invite-only phonebook answers look-ups only to enrolled callers", async (backend) => {
  const t = await startTestDirectory({ backend, inviteOnly: true });
  try {
    const alice = await enrollRaw(
      t.dir,
      "alice",
      await createInviteToken(t.data, undefined, { database: t.database }),
    );
    const bob = await enrollRaw(
      t.dir,
      "bob",
      await createInviteToken(t.data, undefined, { database: t.database }),
    );
    const secret = encodeKnockSecret(newKnockSecret());
    assert.equal((await call(t.dir, "PUT", "/v1/presence", { body: presence(secret), as: bob })).status, 200);
    const anonymous = await call(t.dir, "GET", "/v1/users/bob");
    assert.equal(anonymous.status, 401);
    assert.ok(!anonymous.text.includes(secret));
    assert.equal((await call(t.dir, "GET", "/v1/users/bob", { as: alice })).json!.knock, secret);
  } finally {
    await t.close();
  }
});
