/**
 * The pure parts of client/port_mapping.ts: when leases are renewed, what the lease test hook accepts, and
 * that asking no protocol asks nothing. (Mapping itself is tested against routers in network namespaces,
 * tests/reach_mapping_test.ts: a test must not talk to the machine's real router.)
 */
import assert from "node:assert/strict";
import {
  MAPPING_RETRY_MS,
  MAPPING_TTL_MS,
  mappingLeaseMs,
  mappingRetryMs,
  mapPort,
  RENEW_MARGIN_MS,
  renewAfterMs,
} from "../client/port_mapping.ts";

Deno.test("port mapping: a lease is renewed a minute before it ends, a short one halfway", () => {
  assert.equal(renewAfterMs(MAPPING_TTL_MS), MAPPING_TTL_MS - RENEW_MARGIN_MS);
  assert.equal(renewAfterMs(20 * 60_000), 19 * 60_000);
  assert.equal(renewAfterMs(10_000), 5_000);
  assert.equal(renewAfterMs(120_000), 60_000);
});

/** The two test hooks: whole seconds in their range are taken, anything else gives the default. */
const HOOKS = [
  {
    name: "SECURECHAT_MAPPING_LEASE_S",
    read: mappingLeaseMs,
    fallback: MAPPING_TTL_MS,
    taken: [["10", 10_000], ["86400", 86_400_000], ["300", 300_000]],
    ignored: ["9", "86401", "1.5", "-20", "ten", ""],
  },
  {
    name: "SECURECHAT_MAPPING_RETRY_S",
    read: mappingRetryMs,
    fallback: MAPPING_RETRY_MS,
    taken: [["2", 2_000], ["86400", 86_400_000]],
    ignored: ["1", "0", "86401", "2.5", "soon", ""],
  },
] as const;

for (const h of HOOKS) {
  Deno.test(`port mapping: ${h.name} is taken in whole seconds within its range, else the default`, () => {
    const before = Deno.env.get(h.name);
    try {
      Deno.env.delete(h.name);
      assert.equal(h.read(), h.fallback);
      for (const [v, want] of h.taken) {
        Deno.env.set(h.name, v);
        assert.equal(h.read(), want, v);
      }
      for (const v of h.ignored) {
        Deno.env.set(h.name, v);
        assert.equal(h.read(), h.fallback, `"${v}" is ignored`);
      }
    } finally {
      if (before === undefined) Deno.env.delete(h.name);
      else Deno.env.set(h.name, before);
    }
  });
}

Deno.test("port mapping: no protocol asked, no mapping, and nothing logged as tried", async () => {
  const logs: string[] = [];
  assert.equal(await mapPort(10042, (t) => logs.push(t), { protocols: [] }), null);
  assert.deepEqual(logs, []);
});
