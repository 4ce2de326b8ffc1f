/**
 * contract/knock.ts, pure: a knock made with the listener's secret passes once; another secret, a slot out
 * of the window (old or ahead), a replay, a truncated knock, a TLS ClientHello and flipped bits are refused
 * with the reason; the remembered nonces are bounded and forgotten with their slot. And the IPv6 /64
 * grouping of the listener's per-address cap (client/session/address_group.ts).
 */
import assert from "node:assert/strict";
import {
  couldBeKnock,
  decodeKnockSecret,
  encodeKnockSecret,
  KNOCK_BYTES,
  KNOCK_MAX_REMEMBERED,
  KNOCK_SLOT_MS,
  KNOCK_SLOT_SKEW,
  KnockError,
  KnockGuard,
  makeKnock,
  newKnockSecret,
} from "../contract/mod.ts";
import { addressGroup } from "../client/session/address_group.ts";

const NOW = 1_800_000_000_000;

Deno.test("knock: the right secret passes once; a replay, another secret, an old or early slot do not", () => {
  const secret = newKnockSecret();
  const guard = new KnockGuard(secret);
  const k = makeKnock(secret, NOW);
  assert.equal(k.length, KNOCK_BYTES);
  assert.deepEqual(guard.check(k, NOW), { ok: true });
  assert.deepEqual(guard.check(k, NOW + 1000), { ok: false, reason: "REPLAY" }, "a sniffed knock replayed");
  assert.deepEqual(guard.check(makeKnock(newKnockSecret(), NOW), NOW), { ok: false, reason: "TAG" });
  const edge = KNOCK_SLOT_SKEW * KNOCK_SLOT_MS;
  assert.deepEqual(guard.check(makeKnock(secret, NOW - edge), NOW), { ok: true }, "at the window's edge");
  assert.deepEqual(guard.check(makeKnock(secret, NOW - edge - KNOCK_SLOT_MS), NOW), {
    ok: false,
    reason: "STALE",
  });
  assert.deepEqual(guard.check(makeKnock(secret, NOW + edge + KNOCK_SLOT_MS), NOW), {
    ok: false,
    reason: "STALE",
  });
  // Two knocks in the same slot with different nonces both pass (two dials at once).
  assert.deepEqual(guard.check(makeKnock(secret, NOW), NOW), { ok: true });
});

Deno.test("knock: every flipped bit, a truncated knock and a TLS ClientHello are refused", () => {
  const secret = newKnockSecret();
  const k = makeKnock(secret, NOW);
  for (let bit = 0; bit < KNOCK_BYTES * 8; bit++) {
    const bad = k.slice();
    bad[bit >> 3] ^= 1 << (bit & 7);
    const v = new KnockGuard(secret).check(bad, NOW);
    assert.equal(v.ok, false, `bit ${bit}`);
  }
  assert.deepEqual(new KnockGuard(secret).check(k.subarray(0, KNOCK_BYTES - 1), NOW), {
    ok: false,
    reason: "MAGIC",
  });
  // The first bytes of any TLS record (a handshake record, TLS 1.0 legacy version): not a knock.
  const clientHello = new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00]);
  assert.equal(couldBeKnock(clientHello), false);
  assert.equal(couldBeKnock(k.subarray(0, 2)), true, "a knock arriving a byte at a time is waited for");
});

Deno.test("knock: remembered nonces are bounded, and forgotten once their slot leaves the window", () => {
  const secret = newKnockSecret();
  const max = 1000;
  assert.ok(KNOCK_MAX_REMEMBERED >= max);
  const guard = new KnockGuard(secret, { maxRemembered: max });
  for (let i = 0; i < max; i++) assert.equal(guard.check(makeKnock(secret, NOW), NOW).ok, true);
  assert.equal(guard.remembered, max);
  // Full: refused rather than forgetting a nonce that could then be replayed.
  assert.deepEqual(guard.check(makeKnock(secret, NOW), NOW), { ok: false, reason: "FULL" });
  const later = NOW + (KNOCK_SLOT_SKEW + 1) * KNOCK_SLOT_MS;
  assert.deepEqual(guard.check(makeKnock(secret, later), later), { ok: true });
  assert.equal(guard.remembered, 1, "the old slot's nonces were forgotten");
});

Deno.test("knock: secrets are 32 bytes, carried as canonical base64url", () => {
  const s = newKnockSecret();
  assert.deepEqual(decodeKnockSecret(encodeKnockSecret(s)), s);
  assert.throws(
    () => makeKnock(new Uint8Array(16)),
    (e) => e instanceof KnockError && e.code === "BAD_SECRET",
  );
  assert.throws(() => new KnockGuard(new Uint8Array(33)), KnockError);
  assert.throws(() => encodeKnockSecret(new Uint8Array(31)), KnockError);
  assert.equal(decodeKnockSecret(encodeKnockSecret(s) + "A"), null);
  assert.equal(decodeKnockSecret("/".repeat(42) + "w"), null, "base64, not base64url");
});

Deno.test("listener cap: IPv4 counts by address, IPv6 by /64 (any spelling)", () => {
  assert.equal(addressGroup("192.0.2.7"), "v4:192.0.2.7");
  assert.equal(addressGroup("::ffff:192.0.2.7"), "v4:192.0.2.7", "an IPv4-mapped address is that IPv4 one");
  assert.notEqual(addressGroup("192.0.2.7"), addressGroup("192.0.2.8"));
  const a = addressGroup("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
  assert.equal(a, "v6:2001:db8:1:2::/64");
  assert.equal(addressGroup("2001:DB8:1:2::1"), a, "another host of the same /64, upper case");
  assert.equal(addressGroup("[2001:0db8:0001:0002::ffff]"), a, "leading zeros, brackets");
  assert.equal(addressGroup("2001:db8:1:2::1%eth0"), a, "a zone");
  assert.notEqual(addressGroup("2001:db8:1:3::1"), a, "the next /64 is someone else");
  assert.equal(addressGroup("::1"), "v6:0:0:0:0::/64");
  assert.equal(addressGroup("2001:db8::"), "v6:2001:db8:0:0::/64");
  assert.equal(addressGroup("64:ff9b::192.0.2.1"), "v6:64:ff9b:0:0::/64");
});
