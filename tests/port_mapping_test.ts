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

Deno.test("port mapping: SECURECHAT_MAPPING_LEASE_S sets the lease in whole seconds, 10..86400, else the default", () => {
  const before = Deno.env.get("SECURECHAT_MAPPING_LEASE_S");
  try {
    Deno.env.delete("SECURECHAT_MAPPING_LEASE_S");
    assert.equal(mappingLeaseMs(), MAPPING_TTL_MS);
    for (const [v, want] of [["10", 10_000], ["86400", 86_400_000], ["300", 300_000]] as const) {
      Deno.env.set("SECURECHAT_MAPPING_LEASE_S", v);
      assert.equal(mappingLeaseMs(), want, v);
    }
    for (const v of ["9", "86401", "1.5", "-20", "ten", ""]) {
      Deno.env.set("SECURECHAT_MAPPING_LEASE_S", v);
      assert.equal(mappingLeaseMs(), MAPPING_TTL_MS, `"${v}" is ignored`);
    }
  } finally {
    if (before === undefined) Deno.env.delete("SECURECHAT_MAPPING_LEASE_S");
    else Deno.env.set("SECURECHAT_MAPPING_LEASE_S", before);
  }
});

Deno.test("port mapping: no protocol asked, no mapping, and nothing logged as tried", async () => {
  const logs: string[] = [];
  assert.equal(await mapPort(10042, (t) => logs.push(t), { protocols: [] }), null);
  assert.deepEqual(logs, []);
});

Deno.test("port mapping: SECURECHAT_MAPPING_RETRY_S sets the retry while none is held in whole seconds, 2..86400", () => {
  const before = Deno.env.get("SECURECHAT_MAPPING_RETRY_S");
  try {
    Deno.env.delete("SECURECHAT_MAPPING_RETRY_S");
    assert.equal(mappingRetryMs(), MAPPING_RETRY_MS);
    assert.equal(MAPPING_RETRY_MS, 5 * 60_000);
    for (const [v, want] of [["2", 2_000], ["86400", 86_400_000]] as const) {
      Deno.env.set("SECURECHAT_MAPPING_RETRY_S", v);
      assert.equal(mappingRetryMs(), want, v);
    }
    for (const v of ["1", "0", "86401", "2.5", "soon", ""]) {
      Deno.env.set("SECURECHAT_MAPPING_RETRY_S", v);
      assert.equal(mappingRetryMs(), MAPPING_RETRY_MS, `"${v}" is ignored`);
    }
  } finally {
    if (before === undefined) Deno.env.delete("SECURECHAT_MAPPING_RETRY_S");
    else Deno.env.set("SECURECHAT_MAPPING_RETRY_S", before);
  }
});
