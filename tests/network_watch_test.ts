/**
 * client/network_watch.ts on a fake clock, with the interface list the test sets: a change is reported
 * once, after it has been read twice in a row (a move in several steps is one change), with what went and
 * what came; loopback and link-local addresses are not watched; nothing is reported after stop().
 */
import assert from "node:assert/strict";
import { FakeScheduler } from "./helpers/fake_scheduler.ts";
import { type NetworkChange, NetworkWatch, watchedAddresses } from "../client/network_watch.ts";
import type { InterfaceAddress } from "../client/candidates.ts";

const v4 = (address: string): InterfaceAddress => ({ family: "IPv4", address });
const v6 = (address: string): InterfaceAddress => ({ family: "IPv6", address });
const LOOPBACK = [v4("127.0.0.1"), v6("::1")];

function watch(initial: InterfaceAddress[]) {
  const scheduler = new FakeScheduler();
  let now = initial;
  const changes: NetworkChange[] = [];
  const w = new NetworkWatch({
    addresses: () => now,
    onChange: (c) => changes.push(c),
    scheduler,
    pollMs: 1000,
  });
  w.start();
  return { w, scheduler, changes, set: (a: InterfaceAddress[]) => now = a };
}

Deno.test("network watch: loopback, link-local and the IPv4 autoconfiguration range are not our network", () => {
  assert.deepEqual(
    [...watchedAddresses([
      ...LOOPBACK,
      v6("fe80::1"),
      v6("FE80::abcd"),
      v4("169.254.3.4"),
      v4("192.168.1.10"),
      v6("2001:DB8::7"),
    ])],
    ["192.168.1.10", "2001:db8::7"],
  );
});

Deno.test("network watch: a move is reported once it settled, with what went and what came", async () => {
  const t = watch([...LOOPBACK, v4("192.168.1.10")]);
  await t.scheduler.tick(5000);
  assert.deepEqual(t.changes, [], "nothing changed, nothing said");
  // The old address goes; the new one is given one poll later (DHCP): read once gone, once new, then new.
  t.set([...LOOPBACK]);
  await t.scheduler.tick(1000);
  t.set([...LOOPBACK, v4("192.168.2.10")]);
  await t.scheduler.tick(1000);
  assert.deepEqual(t.changes, [], "not settled yet: each set was read once");
  await t.scheduler.tick(1000);
  assert.deepEqual(t.changes, [{ gone: ["192.168.1.10"], came: ["192.168.2.10"] }]);
  assert.deepEqual([...t.w.addresses], ["192.168.2.10"]);
  await t.scheduler.tick(5000);
  assert.equal(t.changes.length, 1, "said once");
  t.w.stop();
});

Deno.test("network watch: an address that goes and comes back within a poll is no change", async () => {
  const t = watch([v4("10.0.0.5")]);
  t.set([]);
  await t.scheduler.tick(1000);
  t.set([v4("10.0.0.5")]);
  await t.scheduler.tick(3000);
  assert.deepEqual(t.changes, []);
  t.w.stop();
});

Deno.test("network watch: an added address (a VPN up) is a change with nothing gone; stop() ends the watch", async () => {
  const t = watch([v4("192.168.1.10")]);
  t.set([v4("192.168.1.10"), v4("10.8.0.2")]);
  await t.scheduler.tick(2000);
  assert.deepEqual(t.changes, [{ gone: [], came: ["10.8.0.2"] }]);
  t.w.stop();
  t.set([]);
  await t.scheduler.tick(5000);
  assert.equal(t.changes.length, 1);
});
