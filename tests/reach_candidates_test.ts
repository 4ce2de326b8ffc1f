/**
 * What we publish and how the dialer races (client/candidates.ts, client/dialer.ts): address kinds,
 * candidate order, relay-only publishing nothing of ours, and Happy Eyeballs (staggered starts, the next one
 * at once after a failure, the first connection wins and later ones are closed). Then the defaults of a real
 * `securechat chat`: every interface, a port kept in the home folder across restarts, candidates listed.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { join } from "node:path";
import {
  addressKind,
  candidateHosts,
  dialableFromInternet,
  firstGlobalIpv6,
  plainAddress,
  publicationFor,
} from "../client/candidates.ts";
import { raceAttempts } from "../client/dialer.ts";
import { DirectoryClient } from "../client/directory_client.ts";
import { enrollUser, spawnHeadless, startPhonebook } from "./helpers/chat.ts";

Deno.test("candidates: kinds by range; global IPv6 first, loopback last, link-local never", () => {
  assert.equal(addressKind("192.168.1.10"), "lan");
  assert.equal(addressKind("10.1.2.3"), "lan");
  assert.equal(addressKind("100.64.1.10"), "lan");
  assert.equal(addressKind("::ffff:172.16.0.1"), "lan");
  assert.equal(addressKind("198.18.0.4"), "public");
  assert.equal(addressKind("127.0.0.1"), "local");
  assert.equal(addressKind("::1"), "local");
  assert.equal(addressKind("2001:db8::1"), "ipv6");
  assert.equal(addressKind("fd00::1"), "lan");
  assert.deepEqual(
    candidateHosts([
      { family: "IPv4", address: "127.0.0.1" },
      { family: "IPv6", address: "::1" },
      { family: "IPv4", address: "192.168.1.10" },
      { family: "IPv6", address: "fe80::1" },
      { family: "IPv4", address: "169.254.3.3" },
      { family: "IPv6", address: "2001:db8::5" },
      { family: "IPv4", address: "198.18.0.9" },
      { family: "IPv4", address: "192.168.1.10" },
    ]),
    ["2001:db8::5", "198.18.0.9", "192.168.1.10", "127.0.0.1", "::1"],
  );
});

Deno.test("candidates: a dial-back is asked for only when the phonebook's check did not find our internet addresses closed", () => {
  const v6 = { host: "2001:db8:1::10", port: 4000 };
  const lan = { host: "192.168.1.10", port: 4000 };
  const pub = { host: "198.51.100.7", port: 4000 };
  assert.equal(dialableFromInternet([lan], null), false, "nothing the internet could dial");
  assert.equal(dialableFromInternet([v6, lan], null), true, "no listing to go by: ask");
  assert.equal(
    dialableFromInternet([v6, lan], { reachable: [], reachCheckedAt: null }),
    true,
    "not checked yet",
  );
  // The common IPv6 home: its router's firewall drops the check's connection as it would a peer's.
  assert.equal(dialableFromInternet([v6, lan], { reachable: [], reachCheckedAt: 1 }), false);
  assert.equal(dialableFromInternet([v6, lan], { reachable: [lan], reachCheckedAt: 1 }), false, "LAN only");
  assert.equal(
    dialableFromInternet([v6, pub], {
      reachable: [{ host: "[2001:DB8:1::10]", port: 4000 }],
      reachCheckedAt: 1,
    }),
    true,
    "the IPv6 address was reached (however it is written)",
  );
  assert.equal(dialableFromInternet([v6, pub], { reachable: [pub], reachCheckedAt: 1 }), true);
  assert.equal(
    dialableFromInternet([pub], { reachable: [{ host: pub.host, port: 4001 }], reachCheckedAt: 1 }),
    false,
    "another port is not what we publish",
  );
  assert.equal(
    firstGlobalIpv6([lan, { host: "fd00::1", port: 1 }, v6, { host: "2001:db8:9::1", port: 1 }]),
    v6.host,
  );
  assert.equal(
    firstGlobalIpv6([{ host: "2001:db8:9::1", port: 1, via: "mapping" }, lan]),
    null,
    "a mapping aside",
  );
});

Deno.test("candidates: wildcard publishes interfaces on the bound port; --advertise wins; relay-only nothing", () => {
  const ifaces = [{ family: "IPv4" as const, address: "192.168.1.10" }, {
    family: "IPv6" as const,
    address: "2001:db8::5",
  }];
  const relay = { host: "198.18.0.1", port: 10041 };
  const base = { relay, relayOnly: false, ifaces, max: 8 };
  assert.deepEqual(publicationFor({ ...base, bound: { host: "::", port: 4000 }, advertise: [] }).candidates, [
    { host: "2001:db8::5", port: 4000 },
    { host: "192.168.1.10", port: 4000 },
  ]);
  assert.deepEqual(
    publicationFor({ ...base, bound: { host: "0.0.0.0", port: 4000 }, advertise: [] }).candidates,
    [{ host: "192.168.1.10", port: 4000 }],
    "an IPv4-only socket publishes no IPv6 address",
  );
  const adv = [{ host: "chat.example.org", port: 443 }];
  assert.deepEqual(
    publicationFor({ ...base, bound: { host: "::", port: 4000 }, advertise: adv }).candidates,
    adv,
  );
  const ro = publicationFor({ ...base, relayOnly: true, bound: { host: "::", port: 4000 }, advertise: [] });
  assert.deepEqual(ro, { candidates: [], relay, relayOnly: true });
  assert.deepEqual(
    publicationFor({ ...base, ifaces: [], bound: { host: "::", port: 4000 }, advertise: [] }).candidates,
    [{ host: "127.0.0.1", port: 4000 }],
  );
});

/** A fake socket that records whether it was destroyed. */
function fakeSocket(): net.Socket & { destroyedByRace: boolean } {
  const s = new net.Socket() as net.Socket & { destroyedByRace: boolean };
  s.destroyedByRace = false;
  s.destroy = (() => {
    s.destroyedByRace = true;
    return s;
  }) as typeof s.destroy;
  return s;
}

Deno.test("happy eyeballs: staggered starts, next at once on failure, first connection wins, later closed", async () => {
  const t0 = performance.now();
  const startedAt: number[] = [];
  const sockets = [fakeSocket(), fakeSocket(), fakeSocket()];
  const path = (i: number) => ({ kind: "lan" as const, address: { host: `h${i}`, port: i + 1 } });
  const attempt = (i: number, ms: number, ok: boolean) => ({
    path: path(i),
    open: () => {
      startedAt[i] = performance.now() - t0;
      return new Promise<{ socket: net.Socket; path: ReturnType<typeof path> }>((res, rej) =>
        setTimeout(() => ok ? res({ socket: sockets[i], path: path(i) }) : rej(new Error(`e${i}`)), ms)
      );
    },
  });
  // 0 hangs long, 1 fails fast (so 2 starts at once after it, not a full delay later), 2 connects.
  const r = await raceAttempts([attempt(0, 600, true), attempt(1, 10, false), attempt(2, 30, true)], 200);
  assert.ok("socket" in r);
  assert.equal(r.index, 2);
  assert.ok(startedAt[1] >= 150, `second attempt waited for the delay (${startedAt[1]})`);
  assert.ok(startedAt[2] - startedAt[1] < 150, `third started right after the second failed`);
  await new Promise((res) => setTimeout(res, 700));
  assert.equal(sockets[0].destroyedByRace, true, "a later connection is closed");
  assert.equal(sockets[2].destroyedByRace, false);
  const none = await raceAttempts([attempt(1, 5, false)], 50);
  assert.ok(!("socket" in none));
  assert.equal((none.errors[0] as Error).message, "e1");
});

Deno.test("chat defaults: every interface, the port kept in the home folder across restarts, candidates listed", async () => {
  const pb = await startPhonebook();
  const home = await enrollUser(pb, "dana");
  const look = new DirectoryClient({ url: home.server, caPem: home.caPem });
  try {
    const ports: number[] = [];
    for (let run = 0; run < 2; run++) {
      const p = spawnHeadless(home.dir);
      try {
        const ready = await p.waitEvent((e) => e.event === "ready", 30_000, "ready");
        const m = /^(\[::\]|0\.0\.0\.0):(\d+)$/.exec(String(ready.address));
        assert.ok(m, `listens on all interfaces: ${ready.address}`);
        ports.push(Number(m[2]));
        const saved = JSON.parse(await Deno.readTextFile(join(home.dir, "listen.json")));
        assert.equal(saved.port, ports[run]);
        const entry = await look.lookup("dana");
        assert.ok(entry && entry.candidates.length >= 1);
        assert.ok(entry.candidates.every((c) => c.port === ports[run]), JSON.stringify(entry.candidates));
        assert.ok(entry.candidates.some((c) => c.host === "127.0.0.1"), "loopback is among them");
        assert.equal(entry.relay?.port, pb.server.relay!.port);
      } finally {
        assert.equal(await p.kill("SIGTERM"), 0);
      }
    }
    assert.equal(ports[1], ports[0], "the same port after a restart");
  } finally {
    await pb.close();
    await Deno.remove(home.dir, { recursive: true });
  }
});

Deno.test("candidates: an IPv4 address from a dual-stack socket is shown plain", () => {
  assert.equal(plainAddress("::ffff:198.18.0.1"), "198.18.0.1");
  assert.equal(plainAddress("2001:db8::1"), "2001:db8::1");
  assert.equal(plainAddress("10.0.0.1"), "10.0.0.1");
});
