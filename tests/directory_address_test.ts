/** What a user may publish as their address: reachable IPs and real DNS names, in one canonical form. */
import assert from "node:assert/strict";
import { canonicalPresenceHost } from "../server/address.ts";
import { ApiError } from "../server/errors.ts";
import {
  backendTest,
  call,
  codeOf,
  dumpDatabase,
  enrollRaw,
  startTestDirectory,
} from "./helpers/directory.ts";

const REFUSED = [
  // IPv4 addresses in disguise: resolvers (inet_aton) read these as 127.0.0.1 or 1.2.3.4.
  "127.1",
  "0x7f.1",
  "0x7f000001",
  "2130706433",
  "01.02.03.004",
  "chat.example.1",
  // Nobody is reachable there.
  "0.0.0.0",
  "0.1.2.3",
  "::",
  "::ffff:0.0.0.0",
  "224.0.0.1",
  "239.255.255.250",
  "255.255.255.255",
  "240.0.0.1",
  "ff02::1",
  "::ffff:224.0.0.1",
  // Zone identifiers only mean something on the publisher's machine.
  "fe80::1%eth0",
  // Not names at all.
  "",
  "a..b",
  "-a.example",
  "host_name.example",
  "exa mple.org",
  "例え.jp",
  "a".repeat(64) + ".example",
];

const ACCEPTED: [string, string][] = [
  ["127.0.0.1", "127.0.0.1"],
  ["10.1.2.3", "10.1.2.3"],
  ["192.168.1.20", "192.168.1.20"],
  ["::1", "::1"],
  ["2001:DB8::1", "2001:db8::1"],
  ["::ffff:127.0.0.1", "::ffff:7f00:1"],
  ["Chat.Example.ORG", "chat.example.org"],
  ["localhost", "localhost"],
  ["host-1.example.org", "host-1.example.org"],
  ["1host.example.org", "1host.example.org"],
];

Deno.test("canonicalPresenceHost: disguised, unreachable and scoped addresses are refused", () => {
  for (const h of REFUSED) {
    assert.throws(
      () => canonicalPresenceHost(h),
      (e: unknown) => e instanceof ApiError && e.status === 400 && e.code === "BAD_ADDRESS",
      JSON.stringify(h),
    );
  }
  for (const v of [null, 42, ["127.0.0.1"], { host: "x" }]) {
    assert.throws(
      () => canonicalPresenceHost(v),
      (e: unknown) => e instanceof ApiError && e.code === "BAD_ADDRESS",
    );
  }
  for (const [input, canonical] of ACCEPTED) assert.equal(canonicalPresenceHost(input), canonical, input);
});

backendTest(
  "PUT /v1/presence refuses a disguised IP with 400 and changes nothing; stores the canonical form",
  async (backend) => {
    const t = await startTestDirectory({ backend });
    try {
      const alice = await enrollRaw(t.dir, "alice");
      const before = await dumpDatabase(t);
      for (const host of ["127.1", "0.0.0.0", "ff02::1", "fe80::1%eth0"]) {
        const r = await call(t.dir, "PUT", "/v1/presence", {
          body: { host, port: 4000, ttlSeconds: 60 },
          as: alice,
        });
        assert.equal(r.status, 400, host);
        assert.equal(codeOf(r), "BAD_ADDRESS");
      }
      assert.equal(await dumpDatabase(t), before);
      const ok = await call(t.dir, "PUT", "/v1/presence", {
        body: { host: "Chat.Example.ORG", port: 4000, ttlSeconds: 60 },
        as: alice,
      });
      assert.equal(ok.status, 200);
      const me = await call(t.dir, "GET", "/v1/users/alice");
      assert.deepEqual(me.json!.address, { host: "chat.example.org", port: 4000 });
    } finally {
      await t.close();
    }
  },
);
