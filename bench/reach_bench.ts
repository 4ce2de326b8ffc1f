/**
 * `deno task bench reach`: what the relay costs, each figure against a direct path measured in the same run
 * (all on loopback, relay in this process):
 * - session set-up: a mutual TLS 1.3 handshake over a relayed circuit (control request, two legs joined, TLS)
 *   vs the same handshake over a direct TCP connection;
 * - a whole first contact through the engine (phonebook look-up, the race, TLS, hello, the message, its
 *   receipt): relay-only users vs users reaching each other directly;
 * - echo round trips/s and median latency of a 200-byte record inside TLS, relayed vs direct;
 * - CPU per MB: this process's CPU time for 32 MB sent through the relay vs the same bytes direct (the
 *   difference is the relay's share);
 * - memory per open idle circuit vs per direct connection (resident set growth over 200 of each; both ends
 *   live in this process, so it counts the endpoints too).
 * As root, it also builds a small internet in network namespaces and measures session set-up per path
 * (direct, mapped, reversed, relayed, punched; and punched over IPv6 between two homes behind symmetric
 * NATs, in an IPv6 lab) with the real chat processes, each against a bare TLS handshake between the same
 * namespaces (bench/reach_paths.ts), and how long a message to a laptop that
 * changed networks as it was sent takes against one when nothing moved (bench/reach_roaming.ts); elsewhere
 * it says those rows were skipped.
 */
import net from "node:net";
import tls from "node:tls";
import { type BenchFigure, collectGarbage, percentile } from "./harness.ts";
import { enrollUser, type Phonebook, startClient, startPhonebook } from "../tests/helpers/chat.ts";
import type { HomeState } from "../client/home.ts";
import { RelayClient } from "../client/relay_client.ts";
import { labIpv6PunchFigures, labPathFigures } from "./reach_paths.ts";
import { labRoamingFigures } from "./reach_roaming.ts";

const HANDSHAKES = 30;
const ECHOES = 2000;
const BULK_BYTES = 32 * 1024 * 1024;
const CIRCUITS = 200;
const FIRST_CONTACTS = 4;

interface Pair {
  a: HomeState;
  b: HomeState;
}

function tlsServer(home: HomeState, onSocket: (s: tls.TLSSocket) => void): tls.Server {
  const srv = tls.createServer({
    cert: home.certPem,
    key: home.keyPem,
    ca: home.caPem,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.3",
  }, onSocket);
  srv.on("error", () => {});
  return srv;
}

function tlsOver(home: HomeState, socket: net.Socket): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const c = tls.connect({
      socket,
      cert: home.certPem,
      key: home.keyPem,
      ca: home.caPem,
      rejectUnauthorized: false,
      minVersion: "TLSv1.3",
      checkServerIdentity: () => undefined,
    }, () => resolve(c));
    c.once("error", reject);
  });
}

function tcp(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port }, () => resolve(s));
    s.once("error", reject);
  });
}

/** Two relay clients (a dials b), b's circuits handed to a TLS echo server. */
async function relayPair(pb: Phonebook, p: Pair) {
  const relay = { host: "127.0.0.1", port: pb.server.relay!.port };
  const server = tlsServer(p.b, (s) => s.on("data", (d) => s.write(d)));
  const log = () => {};
  const rb = new RelayClient({
    relay,
    ...p.b,
    onIncoming: (s) => server.emit("connection", s),
    log,
  });
  const ra = new RelayClient({ relay, ...p.a, onIncoming: (s) => s.destroy(), log });
  await Promise.all([ra.start(), rb.start()]);
  return {
    dial: async () => await tlsOver(p.a, await ra.dial("bob")),
    raw: () => ra.dial("bob"),
    close: () => {
      ra.close();
      rb.close();
      server.close();
    },
  };
}

async function directPair(p: Pair) {
  const server = tlsServer(p.b, (s) => s.on("data", (d) => s.write(d)));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const raws = new Set<net.Socket>();
  const plain = net.createServer((s) => {
    raws.add(s);
    s.on("error", () => {});
  });
  await new Promise<void>((r) => plain.listen(0, "127.0.0.1", () => r()));
  const plainPort = (plain.address() as net.AddressInfo).port;
  return {
    dial: async () => await tlsOver(p.a, await tcp(port)),
    raw: () => tcp(plainPort),
    close: () => {
      server.close();
      for (const s of raws) s.destroy();
      plain.close();
    },
  };
}

async function handshakeMs(dial: () => Promise<tls.TLSSocket>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < HANDSHAKES; i++) {
    const t = performance.now();
    const s = await dial();
    times.push(performance.now() - t);
    s.destroy();
  }
  return percentile(times.sort((x, y) => x - y), 50);
}

async function echo(dial: () => Promise<tls.TLSSocket>): Promise<{ perSecond: number; medianMs: number }> {
  const s = await dial();
  const payload = new Uint8Array(200).fill(7);
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < ECHOES; i++) {
    const t = performance.now();
    await new Promise<void>((resolve) => {
      let got = 0;
      const on = (d: Uint8Array) => {
        got += d.length;
        if (got >= payload.length) {
          s.off("data", on);
          resolve();
        }
      };
      s.on("data", on);
      s.write(payload);
    });
    lat.push(performance.now() - t);
  }
  const perSecond = ECHOES / ((performance.now() - t0) / 1000);
  s.destroy();
  return { perSecond, medianMs: percentile(lat.sort((x, y) => x - y), 50) };
}

/** CPU ms of this process to push BULK_BYTES through `dial`'s TLS (echoed back). */
async function cpuPerMb(dial: () => Promise<tls.TLSSocket>): Promise<number> {
  const s = await dial();
  const chunk = new Uint8Array(64 * 1024).fill(1);
  const before = process.cpuUsage();
  await new Promise<void>((resolve) => {
    let back = 0;
    s.on("data", (d: Uint8Array) => {
      back += d.length;
      if (back >= BULK_BYTES) resolve();
    });
    let sent = 0;
    const pump = () => {
      while (sent < BULK_BYTES) {
        sent += chunk.length;
        if (!s.write(chunk)) return void s.once("drain", pump);
      }
    };
    pump();
  });
  const u = process.cpuUsage(before);
  s.destroy();
  return (u.user + u.system) / 1000 / (BULK_BYTES / 1024 / 1024);
}

/** RSS growth per connection held. Both readings follow a full collection: without it the garbage of the
 * figures before could be taken back while the connections open, and the growth came out negative. */
async function memoryPer(open: () => Promise<net.Socket>): Promise<number> {
  const held: net.Socket[] = [];
  await new Promise((r) => setTimeout(r, 200));
  collectGarbage();
  const before = Deno.memoryUsage().rss;
  for (let i = 0; i < CIRCUITS; i++) held.push(await open());
  await new Promise((r) => setTimeout(r, 200));
  collectGarbage();
  const after = Deno.memoryUsage().rss;
  for (const s of held) s.destroy();
  return (after - before) / CIRCUITS / 1024;
}

/** Send to first receipt on a new pair of engines (look-up, race, TLS, hello, message, receipt). */
async function firstContact(pb: Phonebook, p: Pair, relayOnly: boolean): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < FIRST_CONTACTS; i++) {
    const a = await startClient(p.a, { relayOnly });
    const b = await startClient(p.b, { relayOnly });
    try {
      const t = performance.now();
      const m = await a.engine.send("bob", "hello");
      await a.log.waitFor("delivered", (e) => e.id === m.id, 30_000);
      times.push(performance.now() - t);
    } finally {
      await a.stop();
      await b.stop();
    }
  }
  void pb;
  return percentile(times.sort((x, y) => x - y), 50);
}

export async function run(): Promise<BenchFigure[]> {
  // First, alone: the lab's processes would otherwise share the two cores with the loopback figures.
  const lab = [...await labPathFigures(), ...await labIpv6PunchFigures(), ...await labRoamingFigures()];
  // The per-user circuit limit (16) would stop the memory figure at 16 circuits.
  const pb = await startPhonebook({ relayLimits: { maxCircuitsPerUser: CIRCUITS + HANDSHAKES + 10 } });
  const p: Pair = { a: await enrollUser(pb, "alice"), b: await enrollUser(pb, "bob") };
  // The engines first: each holds its user's one control connection, which would replace the bench's own.
  const fcDirect = await firstContact(pb, p, false);
  const fcRelay = await firstContact(pb, p, true);
  const relayed = await relayPair(pb, p);
  const direct = await directPair(p);
  try {
    const hsDirect = await handshakeMs(direct.dial);
    const hsRelay = await handshakeMs(relayed.dial);
    const eDirect = await echo(direct.dial);
    const eRelay = await echo(relayed.dial);
    const cpuDirect = await cpuPerMb(direct.dial);
    const cpuRelay = await cpuPerMb(relayed.dial);
    const memDirect = await memoryPer(direct.raw);
    const memRelay = await memoryPer(relayed.raw);
    return [
      ...lab,
      {
        name: "session set-up over a relayed circuit (median)",
        value: hsRelay,
        unit: "ms",
        baseline: { name: "bare mutual TLS handshake, direct", value: hsDirect },
        notes: `${HANDSHAKES} each`,
      },
      {
        name: "first contact, relay-only engines (median)",
        value: fcRelay,
        unit: "ms",
        baseline: { name: "first contact, direct engines", value: fcDirect },
        notes: `send to receipt on a new session, ${FIRST_CONTACTS} each`,
      },
      {
        name: "relayed echo round trips/s",
        value: eRelay.perSecond,
        unit: "/s",
        baseline: { name: "direct", value: eDirect.perSecond },
        notes: `200-byte records, ${ECHOES}`,
      },
      {
        name: "relayed echo latency (median)",
        value: eRelay.medianMs,
        unit: "ms",
        baseline: { name: "direct", value: eDirect.medianMs },
      },
      {
        name: "CPU per MB echoed through the relay",
        value: cpuRelay,
        unit: "ms/MB",
        baseline: { name: "direct", value: cpuDirect },
        notes: `${BULK_BYTES / 1024 / 1024} MB each way; relay share = difference`,
      },
      {
        name: "memory per open idle circuit",
        value: memRelay,
        unit: "KiB",
        baseline: { name: "per direct TCP connection", value: memDirect },
        notes: `RSS growth over ${CIRCUITS}, both ends in this process`,
      },
    ];
  } finally {
    relayed.close();
    direct.close();
    await pb.close();
    await Deno.remove(p.a.dir, { recursive: true });
    await Deno.remove(p.b.dir, { recursive: true });
  }
}
