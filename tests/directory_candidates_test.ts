/**
 * PUT /v1/presence with candidates (docs/protocol.md "Reachability"): each candidate is checked like the
 * best address (a bad one refuses the whole publication and changes nothing), the address the request came
 * from is added, the relay is listed, relay-only lists no address at all yet the user is online through the
 * relay, and an older-style publication still lists its one address as the one candidate.
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

backendTest(
  "presence: candidates checked and listed, the observed source added, relay-only lists none",
  async (backend) => {
    const t = await startTestDirectory({ backend });
    try {
      const alice = await enrollRaw(t.dir, "alice");
      const before = await dumpDatabase(t);
      for (
        const candidates of [
          [{ host: "127.1", port: 4000 }],
          [{ host: "ok.example", port: 0 }],
          "x",
          [
            ...Array(9).keys(),
          ].map((i) => ({ host: `10.0.0.${i}`, port: 4000 })),
        ]
      ) {
        const r = await call(t.dir, "PUT", "/v1/presence", {
          body: { host: "192.168.1.10", port: 4000, ttlSeconds: 60, candidates },
          as: alice,
        });
        assert.equal(r.status, 400, JSON.stringify(candidates));
        assert.equal(codeOf(r), "BAD_ADDRESS");
      }
      assert.equal(await dumpDatabase(t), before, "a refused publication changes nothing");

      const relay = { host: "198.51.100.1", port: 10041 };
      const ok = await call(t.dir, "PUT", "/v1/presence", {
        body: {
          host: "2001:db8::5",
          port: 4000,
          ttlSeconds: 60,
          candidates: [{ host: "2001:DB8::5", port: 4000 }, { host: "192.168.1.10", port: 4000 }],
          relay,
        },
        as: alice,
      });
      assert.equal(ok.status, 200);
      const me = await call(t.dir, "GET", "/v1/users/alice");
      assert.deepEqual(me.json!.address, { host: "2001:db8::5", port: 4000 });
      // Deduplicated (canonical forms), in order, then where the request came from (loopback here).
      assert.deepEqual(me.json!.candidates, [
        { host: "2001:db8::5", port: 4000 },
        { host: "192.168.1.10", port: 4000 },
        { host: "127.0.0.1", port: 4000 },
      ]);
      assert.deepEqual(me.json!.relay, relay);

      const ro = await call(t.dir, "PUT", "/v1/presence", {
        body: { host: "ignored", port: 1, ttlSeconds: 60, relay, relayOnly: true },
        as: alice,
      });
      assert.equal(ro.status, 200);
      const hidden = await call(t.dir, "GET", "/v1/users/alice");
      assert.equal(hidden.json!.online, true, "online through its relay");
      assert.equal(hidden.json!.address, null);
      assert.deepEqual(hidden.json!.candidates, []);
      assert.deepEqual(hidden.json!.relay, relay);
      assert.equal(JSON.stringify(hidden.json).includes("127.0.0.1"), false, "not even the observed source");

      const old = await call(t.dir, "PUT", "/v1/presence", {
        body: { host: "192.0.2.7", port: 5000, ttlSeconds: 60 },
        as: alice,
      });
      assert.equal(old.status, 200);
      const plain = await call(t.dir, "GET", "/v1/users/alice");
      assert.deepEqual(plain.json!.candidates, [{ host: "192.0.2.7", port: 5000 }, {
        host: "127.0.0.1",
        port: 5000,
      }]);
      assert.equal(plain.json!.relay, null);
    } finally {
      await t.close();
    }
  },
);
