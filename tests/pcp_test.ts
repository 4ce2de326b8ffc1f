/**
 * The PCP client (client/pcp_wire.ts, client/pcp.ts) against RFC 6887's packet layout: a request built by
 * hand from §7.1 and §11.1 byte by byte, a response likewise from §7.2, bad fields refused with a clear
 * error, and the client over real UDP on loopback against a router of the test's own that reads the
 * packets by offset (not with our decoder): it maps, renews with the same nonce, deletes with lifetime 0,
 * and reports refusals, NAT-PMP-only routers and silence.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  decodeAnnounce,
  decodeMapResponse,
  decodePmpAnnouncement,
  encodeMapRequest,
  epochShowsLoss,
  ipBytes,
  ipText,
  isIpv6,
  PCP_MAP_PACKET_LENGTH,
  PcpError,
  pmpRestartedSince,
  resultName,
  sameIp,
} from "../client/pcp_wire.ts";
import {
  ANNOUNCE_MIN_GAP_MS,
  fromOurRouter,
  pcpMap,
  type PcpMapOptions,
  renewalDelayMs,
} from "../client/pcp.ts";

const hex = (s: string) => new Uint8Array(s.replace(/\s+/g, "").match(/../g)!.map((h) => parseInt(h, 16)));
const toHex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const NONCE = hex("0102030405060708090a0b0c");

/** pcpMap for 127.0.0.1 with the test's router on `serverPort` (first mapping bounded to 5 s). */
function mapOnLoopback(
  serverPort: number,
  internalPort: number,
  lifetimeSeconds: number,
  more: Partial<PcpMapOptions> = {},
) {
  return pcpMap({
    gateway: "127.0.0.1",
    clientIp: "127.0.0.1",
    internalPort,
    lifetimeSeconds,
    serverPort,
    signal: AbortSignal.timeout(5000),
    ...more,
  });
}

/** The PcpError code `f` throws ("no error" when it returns). */
function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof PcpError);
    return e.code;
  }
  return "no error";
}

Deno.test("PCP: a MAP request has RFC 6887's layout (§7.1 header, §11.1 MAP)", () => {
  const b = encodeMapRequest({
    nonce: NONCE,
    protocol: 6,
    internalPort: 10042,
    suggestedExternalPort: 10042,
    suggestedExternalIp: null,
    lifetime: 1200,
    clientIp: "192.168.1.10",
  });
  assert.equal(b.length, 60);
  assert.equal(
    toHex(b),
    toHex(hex(`
      02 01 0000 000004b0
      00000000000000000000ffff c0a8010a
      0102030405060708090a0b0c 06 000000 273a 273a
      00000000000000000000ffff 00000000`)),
  );
  // A delete is the same request with lifetime 0 (§11.1); an IPv6 client address travels as is.
  const del = encodeMapRequest({
    nonce: NONCE,
    protocol: 17,
    internalPort: 1,
    suggestedExternalPort: 0,
    suggestedExternalIp: "198.18.0.7",
    lifetime: 0,
    clientIp: "2001:db8::1",
  });
  assert.equal(toHex(del.subarray(4, 8)), "00000000");
  assert.equal(toHex(del.subarray(8, 24)), "20010db8000000000000000000000001");
  assert.equal(del[36], 17);
  assert.equal(toHex(del.subarray(40, 44)), "00010000");
  assert.equal(toHex(del.subarray(44, 60)), "00000000000000000000ffffc6120007");
  // An IPv6 client with no preference asks with IPv6's all-zeros address (§11.1), which asks the router's
  // firewall for a pinhole: an IPv4 one (::ffff:0.0.0.0) would ask for a translation to IPv4.
  const pinhole = encodeMapRequest({
    nonce: NONCE,
    protocol: 6,
    internalPort: 10042,
    suggestedExternalPort: 10042,
    suggestedExternalIp: null,
    lifetime: 600,
    clientIp: "2001:db8:1::10",
  });
  assert.equal(toHex(pinhole.subarray(44, 60)), "00000000000000000000000000000000");
  assert.equal(toHex(pinhole.subarray(8, 24)), "20010db8000100000000000000000010");
});

Deno.test("PCP: addresses compare however they are written", () => {
  assert.ok(sameIp("2001:db8:1::1", "2001:0DB8:1:0:0:0:0:1"));
  assert.ok(sameIp("fe80::1%eth0", "fe80::1"));
  assert.ok(sameIp("::ffff:192.168.1.1", "192.168.1.1"));
  assert.ok(!sameIp("2001:db8:1::1", "2001:db8:1::2"));
  assert.ok(!sameIp("not an address", "not an address"));
  assert.ok(isIpv6("2001:db8::1") && !isIpv6("::ffff:10.0.0.1") && !isIpv6("10.0.0.1"));
});

Deno.test("PCP: a MAP response is read at RFC 6887's offsets (§7.2, §11.1)", () => {
  const r = decodeMapResponse(hex(`
    02 81 00 00 00000258 0000002a 000000000000000000000000
    0102030405060708090a0b0c 06 000000 273a 9c40
    00000000000000000000ffff c6120005`));
  assert.deepEqual({ ...r, nonce: toHex(r.nonce) }, {
    result: 0,
    lifetime: 600,
    epoch: 42,
    nonce: toHex(NONCE),
    protocol: 6,
    internalPort: 10042,
    externalPort: 40000,
    externalIp: "198.18.0.5",
  });
  const refused = decodeMapResponse(
    hex(`02 81 00 02 00000000 0000002a ${"00".repeat(12)} ${"00".repeat(36)}`),
  );
  assert.equal(refused.result, 2);
  assert.equal(resultName(refused.result), "NOT_AUTHORIZED");
  assert.equal(resultName(99), "result 99");
});

Deno.test("PCP: what is not a MAP response is refused with a code that says why", () => {
  // A NAT-PMP router's answer to a version it does not know: version 0, result 1 (RFC 6886 §3.5).
  assert.equal(codeOf(() => decodeMapResponse(hex("00 81 0001 00000010"))), "PCP_UNSUPPORTED_VERSION");
  assert.equal(codeOf(() => decodeMapResponse(hex("02 81 00 00 00000258"))), "PCP_MALFORMED_RESPONSE");
  assert.equal(
    codeOf(() =>
      decodeMapResponse(new Uint8Array(1104).fill(0).map((_, i) => i === 0 ? 2 : i === 1 ? 0x81 : 0))
    ),
    "PCP_MALFORMED_RESPONSE",
  );
  const request = encodeMapRequest({
    nonce: NONCE,
    protocol: 6,
    internalPort: 1,
    suggestedExternalPort: 1,
    suggestedExternalIp: null,
    lifetime: 1,
    clientIp: "10.0.0.2",
  });
  assert.equal(codeOf(() => decodeMapResponse(request)), "PCP_NOT_A_RESPONSE");
  const peer = new Uint8Array(PCP_MAP_PACKET_LENGTH);
  peer[0] = 2;
  peer[1] = 0x82; // a PEER response
  assert.equal(codeOf(() => decodeMapResponse(peer)), "PCP_NOT_A_RESPONSE");
});

Deno.test("PCP: bad request fields are refused before anything is sent", () => {
  const good = {
    nonce: NONCE,
    protocol: 6,
    internalPort: 10042,
    suggestedExternalPort: 0,
    suggestedExternalIp: null,
    lifetime: 60,
    clientIp: "192.168.1.10",
  };
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ["short nonce", { nonce: new Uint8Array(8) }, /nonce must be 12 bytes/],
    ["internal port 0", { internalPort: 0 }, /internalPort/],
    ["internal port too big", { internalPort: 65536 }, /internalPort/],
    ["external port negative", { suggestedExternalPort: -1 }, /suggestedExternalPort/],
    ["fractional lifetime", { lifetime: 1.5 }, /lifetime/],
    ["negative lifetime", { lifetime: -1 }, /lifetime/],
    ["protocol 256", { protocol: 256 }, /protocol/],
    ["client IP not an address", { clientIp: "router.home" }, /not an IP address/],
    ["client IP octet 256", { clientIp: "192.168.1.256" }, /not an IP address/],
    ["external IP with two ::", { suggestedExternalIp: "1::2::3" }, /not an IP address/],
  ];
  for (const [what, change, message] of bad) {
    assert.throws(
      () => encodeMapRequest({ ...good, ...change } as typeof good),
      (e: unknown) => e instanceof PcpError && e.code === "PCP_BAD_ARGUMENT" && message.test(e.message),
      what,
    );
  }
});

Deno.test("PCP: addresses round-trip through their 16 bytes", () => {
  for (
    const [text, back] of [
      ["192.168.1.10", "192.168.1.10"],
      ["::ffff:10.1.2.3", "10.1.2.3"],
      // IPv6 as RFC 5952 writes it: the longest run of zero groups (the first of equal ones) as "::".
      ["2001:db8:0:0:0:0:0:1", "2001:db8::1"],
      ["FE80::A:B", "fe80::a:b"],
      ["::", "::"],
      ["::1", "::1"],
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
      ["2001:db8:0:1:2:3:4:5", "2001:db8:0:1:2:3:4:5"],
    ]
  ) assert.equal(ipText(ipBytes(text)), back, text);
});

Deno.test("PCP: renewals fall between 1/2 and 5/8 of the lease, spread at random (§11.2.1)", () => {
  const d = Array.from({ length: 2000 }, () => renewalDelayMs(7200));
  assert.ok(d.every((x) => x >= 3600_000 && x <= 4500_000), `${Math.min(...d)}..${Math.max(...d)}`);
  // Spread over the window, not one point: both quarters of it are hit.
  assert.ok(d.some((x) => x < 3800_000) && d.some((x) => x > 4300_000));
});

/** A PCP router on loopback of the test's own, reading requests by offset (RFC 6887 §7.1, §11.1). */
interface SeenRequest {
  opcode: number;
  lifetime: number;
  clientIp: Uint8Array;
  nonce: string;
  protocol: number;
  internalPort: number;
  externalPort: number;
}

async function fakeRouter(
  answer: (req: SeenRequest) => Uint8Array | null,
  onRequest?: (port: number) => void,
) {
  const sock = dgram.createSocket("udp4");
  const seen: SeenRequest[] = [];
  sock.on("message", (msg: Uint8Array, from: dgram.RemoteInfo) => {
    const b = new Uint8Array(msg);
    const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const req = {
      opcode: b[1],
      lifetime: v.getUint32(4),
      clientIp: b.slice(8, 24),
      nonce: toHex(b.slice(24, 36)),
      protocol: b[36],
      internalPort: v.getUint16(40),
      externalPort: v.getUint16(42),
    };
    seen.push(req);
    onRequest?.(from.port);
    const out = answer(req);
    if (out) sock.send(out, from.port, from.address);
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  return {
    port: sock.address().port,
    seen,
    /** Sends `b` from the router's port to 127.0.0.1:`to`. */
    sendTo: (b: Uint8Array, to: number) => sock.send(b, to, "127.0.0.1"),
    close: () => sock.close(),
  };
}

function mapAnswer(nonce: string, result: number, lifetime: number, internal: number, external: number) {
  return hex(
    `02 81 00 ${result.toString(16).padStart(2, "0")} ${lifetime.toString(16).padStart(8, "0")} 00000007 ${
      "00".repeat(12)
    } ${nonce} 06 000000 ${internal.toString(16).padStart(4, "0")} ${
      external.toString(16).padStart(4, "0")
    } ${"00".repeat(10)}ffff c6120009`,
  );
}

Deno.test("PCP client: maps over UDP, renews with the same nonce within the lease, deletes on stop", async () => {
  const router = await fakeRouter((q) =>
    mapAnswer(q.nonce, 0, q.lifetime === 0 ? 0 : 2, q.internalPort, q.lifetime === 0 ? 0 : 40001)
  );
  const logs: string[] = [];
  try {
    const m = await mapOnLoopback(router.port, 10042, 1200, {
      log: (t) => logs.push(t),
    });
    assert.deepEqual([m.externalHost, m.externalPort, m.lifetime], ["198.18.0.9", 40001, 2]);
    const first = router.seen[0];
    assert.equal(first.opcode, 1);
    assert.equal(first.lifetime, 1200);
    assert.equal(first.externalPort, 10042, "asks for the internal port by default");
    assert.equal(toHex(first.clientIp), "00000000000000000000ffff7f000001");
    // The router granted 2 s: a renewal comes 1 to 1.25 s later, for the port it assigned.
    while (router.seen.length < 2) await new Promise((r) => setTimeout(r, 50));
    assert.equal(router.seen[1].nonce, first.nonce);
    assert.equal(router.seen[1].externalPort, 40001);
    assert.equal(router.seen[1].lifetime, 1200);
    await m.stop(AbortSignal.timeout(3000));
    const last = router.seen.at(-1)!;
    assert.equal(last.lifetime, 0, "stop() deletes the mapping");
    assert.equal(last.nonce, first.nonce);
    const count = router.seen.length;
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(router.seen.length, count, "nothing is renewed after stop()");
    assert.ok(logs.some((l) => l.startsWith("PCP mapping renewed")), logs.join("; "));
  } finally {
    router.close();
  }
});

Deno.test("PCP client: stop() during an unanswered renewal cancels it (no timer of it outlives stop()) and still sends the delete", async () => {
  // The op sanitizer of this test fails it if a retransmission timer of the renewal is still pending at its end.
  let mapped = false;
  const router = await fakeRouter((q) => {
    if (mapped) return null; // renewals and the delete go unanswered
    mapped = true;
    return mapAnswer(q.nonce, 0, 2, q.internalPort, 40002);
  });
  try {
    const m = await mapOnLoopback(router.port, 10043, 60);
    // The first request, the renewal (after 1 to 1.25 s) and its first retransmission (0.5 s later).
    while (router.seen.filter((q) => q.lifetime !== 0).length < 3) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await m.stop(AbortSignal.timeout(1000));
    const del = router.seen.findIndex((q) => q.lifetime === 0);
    assert.ok(del > 0, "the delete was sent");
    const after = router.seen.slice(del).map((q) => q.lifetime);
    assert.deepEqual(
      after,
      after.map(() => 0),
      "after stop() only the delete (and its retransmissions) went out",
    );
  } finally {
    router.close();
  }
});

Deno.test("PCP client: a refusal, a NAT-PMP-only router and silence each end the attempt with their code", async () => {
  const cases: [string, (nonce: string) => Uint8Array | null, string, number | undefined][] = [
    ["refused", (n) => mapAnswer(n, 2, 0, 10042, 0), "PCP_REFUSED", 2],
    ["NAT-PMP only", () => hex("00 81 0001 00000010"), "PCP_UNSUPPORTED_VERSION", 1],
    // An answer with another nonce is not ours (§11.3): ignored, so the attempt runs out of time.
    ["wrong nonce", () => mapAnswer("ff".repeat(12), 0, 60, 10042, 10042), "PCP_TIMEOUT", undefined],
    ["silent", () => null, "PCP_TIMEOUT", undefined],
  ];
  for (const [what, answer, code, result] of cases) {
    const router = await fakeRouter((q) => answer(q.nonce));
    try {
      await assert.rejects(
        pcpMap({
          gateway: "127.0.0.1",
          clientIp: "127.0.0.1",
          internalPort: 10042,
          lifetimeSeconds: 60,
          serverPort: router.port,
          signal: AbortSignal.timeout(1200),
        }),
        (e: unknown) => e instanceof PcpError && e.code === code && e.result === result,
        what,
      );
      // Retransmitted while unanswered (0.5 s, then 1 s after that).
      if (code === "PCP_TIMEOUT") assert.ok(router.seen.length >= 2, `${what}: ${router.seen.length} sent`);
    } finally {
      router.close();
    }
  }
});

/** An unsolicited ANNOUNCE response (§7.2 header, opcode 0, no opcode data) with `epoch`, built by hand. */
const announce = (epoch: number, result = 0) =>
  hex(
    `02 80 00 ${result.toString(16).padStart(2, "0")} 00000000 ${epoch.toString(16).padStart(8, "0")} ${
      "00".repeat(12)
    }`,
  );

Deno.test("PCP: an ANNOUNCE is read at RFC 6887's offsets; what is not one is refused", () => {
  assert.equal(decodeAnnounce(announce(0)), 0);
  assert.equal(decodeAnnounce(announce(0x01020304)), 0x01020304);
  const code = (b: Uint8Array) => codeOf(() => decodeAnnounce(b));
  const req = announce(5);
  req[1] = 0x00; // an ANNOUNCE request (R=0), as a neighbour asking the router
  assert.equal(code(req), "PCP_NOT_A_RESPONSE");
  assert.equal(code(mapAnswer("00".repeat(12), 0, 60, 1, 1)), "PCP_NOT_A_RESPONSE", "a MAP response");
  assert.equal(code(announce(5, 7)), "PCP_NOT_A_RESPONSE", "a failed ANNOUNCE");
  const v1 = announce(5);
  v1[0] = 1;
  assert.equal(code(v1), "PCP_NOT_A_RESPONSE", "another version");
  assert.equal(code(announce(5).slice(0, 20)), "PCP_MALFORMED_RESPONSE");
  assert.equal(code(new Uint8Array(26)), "PCP_MALFORMED_RESPONSE", "not a multiple of 4");
});

Deno.test("PCP: the epoch shows a lost state when it went back or ran at another pace than our clock (§8.5)", () => {
  const at = (epoch: number, s: number) => ({ epoch, atMs: s * 1000 });
  assert.equal(epochShowsLoss(at(1000, 0), at(1600, 600)), false, "in step");
  assert.equal(epochShowsLoss(at(1000, 0), at(1001, 0.2)), false, "a second of rounding");
  assert.equal(epochShowsLoss(at(1000, 0), at(999, 0)), false, "back by one second: rounding");
  assert.equal(epochShowsLoss(at(1000, 0), at(0, 1)), true, "back to 0: the router restarted");
  assert.equal(epochShowsLoss(at(1000, 0), at(998, 0)), true, "back by two seconds");
  assert.equal(epochShowsLoss(at(1000, 0), at(1030, 600)), true, "its epoch stood still while ours ran");
  assert.equal(epochShowsLoss(at(1000, 0), at(2200, 600)), true, "its epoch ran twice as fast");
  // 2 s plus 1/16 either way is tolerated.
  assert.equal(epochShowsLoss(at(0, 0), at(160 - 12, 160)), false);
  assert.equal(epochShowsLoss(at(0, 0), at(160 - 13, 160)), true);
});

Deno.test("PCP client: a router's ANNOUNCE that shows it restarted has the mapping asked again at once; one that shows no loss, or comes from elsewhere, changes nothing", async () => {
  let clientPort = 0;
  let epoch = 1000;
  const router = await fakeRouter(
    (q) =>
      mapAnswer(q.nonce, 0, q.lifetime === 0 ? 0 : 3600, q.internalPort, 40003).map((b, i) =>
        // the answer's epoch field (bytes 8..11): this router's own
        i >= 8 && i < 12 ? (epoch >>> (8 * (11 - i))) & 0xff : b
      ),
    (port) => clientPort = port,
  );
  const stranger = dgram.createSocket("udp4");
  await new Promise<void>((r) => stranger.bind(0, "127.0.0.1", () => r()));
  const logs: string[] = [];
  const requests = () => router.seen.filter((q) => q.lifetime !== 0).length;
  const settle = () => new Promise((r) => setTimeout(r, 300));
  try {
    const m = await mapOnLoopback(router.port, 10044, 3600, {
      // This test sends its ANNOUNCEs to the request's own port (§14.1.1's unicast form): nothing listens
      // on the machine's port 5350 for it.
      announcePort: null,
      announceDelayMaxMs: 50,
      log: (t) => logs.push(t),
    });
    assert.equal(requests(), 1);
    // The router's epoch ran on as ours did: no loss, nothing asked (the renewal is half an hour away).
    router.sendTo(announce(1000), clientPort);
    await settle();
    assert.equal(requests(), 1, "an ANNOUNCE that shows no loss asked again");
    // A restart announced by someone else than the router (another port of the same host) is ignored.
    stranger.send(announce(0), clientPort, "127.0.0.1");
    await settle();
    assert.equal(requests(), 1, "an ANNOUNCE from another port was believed");
    // The router restarted: epoch 0. The mapping is asked for again, with the same nonce, within the wait.
    epoch = 0;
    router.sendTo(announce(0), clientPort);
    await settle();
    assert.equal(requests(), 2, "the router's restart did not have the mapping asked again");
    assert.equal(router.seen[1].nonce, router.seen[0].nonce);
    assert.equal(router.seen[1].externalPort, 40003, "asked for the port it had");
    assert.ok(
      logs.some((l) => l.startsWith("the router restarted (PCP ANNOUNCE from 127.0.0.1, epoch 0)")),
      logs.join("; "),
    );
    // Another restart within ANNOUNCE_MIN_GAP_MS (a forged one, over and over) asks nothing more.
    router.sendTo(announce(5000), clientPort);
    router.sendTo(announce(0), clientPort);
    await settle();
    assert.equal(requests(), 2, `asked again within ${ANNOUNCE_MIN_GAP_MS} ms of the last`);
    await m.stop(AbortSignal.timeout(3000));
  } finally {
    stranger.close();
    router.close();
  }
});

Deno.test("NAT-PMP: a gateway's public address announcement is read at RFC 6886's offsets (§3.2); what is not one is refused", () => {
  // version 0, opcode 128, result 0, seconds since start of epoch 0x00000e10, address 198.18.0.200
  assert.deepEqual(decodePmpAnnouncement(hex("00 80 0000 00000e10 c61200c8")), {
    epoch: 3600,
    externalIp: "198.18.0.200",
  });
  const code = (b: Uint8Array) => codeOf(() => decodePmpAnnouncement(b));
  assert.equal(code(hex("00 80 0003 00000e10 c61200c8")), "PCP_NOT_A_RESPONSE", "a failure result");
  assert.equal(code(hex("00 00 0000 00000e10 c61200c8")), "PCP_NOT_A_RESPONSE", "a request");
  assert.equal(code(hex("02 80 0000 00000e10 c61200c8")), "PCP_NOT_A_RESPONSE", "not version 0");
  assert.equal(code(announce(0)), "PCP_MALFORMED_RESPONSE", "PCP's ANNOUNCE (24 bytes)");
});

Deno.test("NAT-PMP: a gateway restarted after our mapping when its epoch is short of 7/8 of the time since, by more than 2 s (§3.6)", () => {
  assert.equal(pmpRestartedSince(0, 10_000), true, "epoch 0, mapped 10 s ago");
  assert.equal(pmpRestartedSince(3600, 600_000), false, "up for an hour, mapped 10 minutes ago");
  assert.equal(pmpRestartedSince(0, 2_000), false, "mapped 2 s ago: too close to tell");
  // 7/8 of 16 s is 14 s: an epoch of 12 s is 2 s short (tolerated), 11 s is more.
  assert.equal(pmpRestartedSince(12, 16_000), false);
  assert.equal(pmpRestartedSince(11, 16_000), true);
});

Deno.test("PCP: an ANNOUNCE is the router's from the address we asked, over IPv6 from a link-local address, or from the router's other address given", () => {
  const ours = (source: string, gateway: string, clientIp: string, alsoFrom?: string | null) =>
    fromOurRouter(source, { gateway, clientIp, alsoFrom });
  assert.equal(ours("192.168.1.1", "192.168.1.1", "192.168.1.10"), true);
  assert.equal(ours("192.168.1.7", "192.168.1.1", "192.168.1.10"), false, "another LAN host");
  assert.equal(ours("169.254.0.1", "192.168.1.1", "192.168.1.10"), false, "IPv4 link-local");
  assert.equal(ours("fe80::1", "192.168.1.1", "192.168.1.10"), false, "link-local counts only over IPv6");
  assert.equal(ours("2001:db8:1::1", "2001:db8:1::1", "2001:db8:1::10"), true);
  assert.equal(ours("fe80::1%lan", "2001:db8:1::1", "2001:db8:1::10"), true, "the router's link-local");
  assert.equal(ours("FEBF::9", "2001:db8:1::1", "2001:db8:1::10"), true, "all of fe80::/10");
  assert.equal(ours("fec0::1", "2001:db8:1::1", "2001:db8:1::10"), false, "site-local is not link-local");
  assert.equal(ours("2001:db8:1::7", "2001:db8:1::1", "2001:db8:1::10"), false, "another global");
  // An IPv6 pinhole's router may announce its restart over IPv4 only (miniupnpd): its IPv4 address counts
  // when given, and no other IPv4 host does.
  assert.equal(ours("192.168.1.1", "2001:db8:1::1", "2001:db8:1::10", "192.168.1.1"), true, "alsoFrom");
  assert.equal(ours("192.168.1.1", "2001:db8:1::1", "2001:db8:1::10"), false, "not given");
  assert.equal(ours("192.168.1.7", "2001:db8:1::1", "2001:db8:1::10", "192.168.1.1"), false, "another host");
  assert.equal(ours("192.168.1.1", "2001:db8:1::1", "2001:db8:1::10", null), false, "none");
});
