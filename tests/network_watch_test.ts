/**
 * client/network_watch.ts on a fake clock, with the interface list the test sets: a change is reported
 * once, after it has been read twice in a row (a move in several steps is one change), with what went and
 * what came; loopback and link-local addresses are not watched; nothing is reported after stop(). A wake
 * from sleep (the boot clock, which counts suspended time, ahead of the monotonic clock by more than
 * WAKE_GAP_MS) is reported once, with how long the machine slept; a late timer or the boot clock's
 * whole-second steps are not.
 */
import assert from "node:assert/strict";
import { FakeScheduler } from "./helpers/fake_scheduler.ts";
import { type NetworkChange, NetworkWatch, WAKE_GAP_MS, watchedAddresses } from "../client/network_watch.ts";
import type { InterfaceAddress } from "../client/candidates.ts";

const v4 = (address: string): InterfaceAddress => ({ family: "IPv4", address });
const v6 = (address: string): InterfaceAddress => ({ family: "IPv6", address });
const LOOPBACK = [v4("127.0.0.1"), v6("::1")];

function watch(initial: InterfaceAddress[]) {
  const scheduler = new FakeScheduler();
  let now = initial;
  const changes: NetworkChange[] = [];
  const wakes: number[] = [];
  /** The boot clock: the monotonic clock plus what the machine slept, in whole seconds like the system's. */
  let slept = 0;
  let bootReadable = true;
  const w = new NetworkWatch({
    addresses: () => now,
    onChange: (c) => changes.push(c),
    bootClock: {
      now: () => bootReadable ? Math.floor((5_000_000 + scheduler.now() + slept) / 1000) * 1000 : null,
      resolutionMs: 1000,
    },
    onWake: (ms) => wakes.push(ms),
    scheduler,
    pollMs: 1000,
  });
  w.start();
  return {
    w,
    scheduler,
    changes,
    wakes,
    set: (a: InterfaceAddress[]) => now = a,
    sleep: (ms: number) => slept += ms,
    bootUnreadable: (v: boolean) => bootReadable = !v,
  };
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

Deno.test("network watch: a wake from sleep is reported once, with how long the machine slept", async () => {
  const t = watch([v4("192.168.1.10")]);
  await t.scheduler.tick(10_000);
  assert.deepEqual(t.wakes, [], "awake all along: the boot clock's whole-second steps are no sleep");
  // An hour asleep between two polls: the timers (monotonic) did not move, the boot clock did.
  t.sleep(3_600_000);
  await t.scheduler.tick(1000);
  assert.equal(t.wakes.length, 1);
  assert.ok(Math.abs(t.wakes[0] - 3_600_000) <= 1000, `slept about an hour: ${t.wakes[0]}`);
  await t.scheduler.tick(10_000);
  assert.equal(t.wakes.length, 1, "said once");
  assert.deepEqual(t.changes, [], "the same address: no network change");
  t.w.stop();
});

Deno.test("network watch: a gap up to WAKE_GAP_MS is no wake; an unreadable boot clock reports none", async () => {
  const t = watch([v4("192.168.1.10")]);
  t.sleep(WAKE_GAP_MS - 1000);
  await t.scheduler.tick(3000);
  assert.deepEqual(t.wakes, [], "a few seconds lose nothing");
  t.sleep(WAKE_GAP_MS + 2000);
  await t.scheduler.tick(1000);
  assert.equal(t.wakes.length, 1, "over the gap and the clock's resolution");
  // No reading on one side of a sleep: nothing to compare, nothing reported (and no false wake after).
  t.bootUnreadable(true);
  t.sleep(60_000);
  await t.scheduler.tick(1000);
  t.bootUnreadable(false);
  await t.scheduler.tick(3000);
  assert.equal(t.wakes.length, 1);
  t.w.stop();
});

Deno.test("network watch: a wake onto another network is a wake, then the change once it settled", async () => {
  const t = watch([v4("192.168.1.10")]);
  // Asleep at home, woken at the cafe: the first poll after the wake sees the new address once.
  t.sleep(600_000);
  t.set([v4("192.168.2.10")]);
  await t.scheduler.tick(1000);
  assert.equal(t.wakes.length, 1);
  assert.deepEqual(t.changes, []);
  await t.scheduler.tick(1000);
  assert.equal(t.wakes.length, 1);
  assert.deepEqual(t.changes, [{ gone: ["192.168.1.10"], came: ["192.168.2.10"] }]);
  t.w.stop();
});
