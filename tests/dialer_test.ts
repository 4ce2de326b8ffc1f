/** The dialer with fake look-ups and dials: one attempt per peer at a time, offline/revoked/unknown peers
 * are not dialled, the listed fingerprint is handed to peer trust first, and a failure is said once per code. */
import assert from "node:assert/strict";
import net from "node:net";
import { dialOrder } from "../client/candidates.ts";
import { type DialEntry, Dialer } from "../client/dialer.ts";
import type { EngineEvent } from "../client/engine_types.ts";
import type { PeerSession } from "../client/session/peer_session.ts";
import { SessionError } from "../client/session/errors.ts";

function rig(entries: Record<string, DialEntry>, dial: () => Promise<PeerSession>) {
  const events: EngineEvent[] = [];
  const listed: string[] = [];
  let dials = 0;
  const dialer = new Dialer({
    lookup: (name) => Promise.resolve(entries[name] ?? null),
    active: () => null,
    dial: () => (dials++, dial()),
    noteListed: (name, fp) => listed.push(`${name}=${fp}`),
    emit: (e) => events.push(e),
  });
  return { dialer, events, listed, dials: () => dials };
}

const online = (fp: string): DialEntry => ({
  online: true,
  address: { host: "127.0.0.1", port: 9 },
  fingerprint: fp,
  revoked: false,
});

Deno.test("dialer: concurrent requests share one attempt; the listed fingerprint is noted before dialling", async () => {
  const session = { id: 1 } as unknown as PeerSession;
  let release!: () => void;
  const r = rig({ bob: online("f1") }, () => new Promise((res) => release = () => res(session)));
  const a = r.dialer.connect("bob");
  const b = r.dialer.connect("bob");
  await new Promise((res) => setTimeout(res, 0));
  release();
  assert.equal(await a, session);
  assert.equal(await b, session);
  assert.equal(r.dials(), 1);
  assert.deepEqual(r.listed, ["bob=f1"]);
});

Deno.test("dialer: offline, revoked and unknown users are not dialled", async () => {
  const r = rig({
    off: { ...online("f"), online: false },
    rev: { ...online("f"), revoked: true },
    noaddr: { ...online("f"), address: null },
  }, () => Promise.reject(new Error("must not dial")));
  for (const name of ["off", "rev", "noaddr", "nobody"]) assert.equal(await r.dialer.connect(name), null);
  assert.equal(r.dials(), 0);
  assert.equal(r.events.length, 0);
});

Deno.test("dialer: a failure is reported once per code, again after clearError or a new code", async () => {
  let err: Error = new SessionError("CERTIFICATE", "refused", "REVOKED");
  const r = rig({ bob: online("f1") }, () => Promise.reject(err));
  await r.dialer.connect("bob");
  await r.dialer.connect("bob");
  assert.deepEqual(r.events.map((e) => (e as { code: string }).code), ["PEER_REVOKED"]);
  r.dialer.clearError("bob");
  await r.dialer.connect("bob");
  err = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
  await r.dialer.connect("bob");
  assert.deepEqual(r.events.map((e) => (e as { code: string }).code), [
    "PEER_REVOKED",
    "PEER_REVOKED",
    "PEER_ECONNREFUSED",
  ]);
});

Deno.test("dialer: a refused dial looks the peer up again; a new knock secret is used at once, an unchanged one is not retried", async () => {
  const session = { id: 2 } as unknown as PeerSession;
  const knocks: (string | null)[] = [];
  let entry: DialEntry = { ...online("f1"), knock: "old" };
  let lookups = 0;
  let dials = 0;
  const events: EngineEvent[] = [];
  const dialer = new Dialer({
    // The first answer was read just before bob published again after his restart.
    lookup: () => {
      const e = entry;
      if (++lookups === 1) entry = { ...online("f1"), knock: "new" };
      return Promise.resolve(e);
    },
    active: () => null,
    dial: () => {
      dials++;
      return knocks[knocks.length - 1] === "new"
        ? Promise.resolve(session)
        : Promise.reject(new SessionError("UNANSWERED", "closed unanswered"));
    },
    noteListed: () => {},
    noteKnock: (_name, k) => knocks.push(k),
    emit: (e) => events.push(e),
  });
  assert.equal(await dialer.connect("bob"), session);
  assert.deepEqual(knocks, ["old", "new"]);
  assert.equal(dials, 2);
  assert.equal(events.length, 0, "recovered within the attempt: nothing to report");

  // The phonebook still lists the secret that was refused: no second dial, the failure is reported.
  entry = { ...online("f1"), knock: "old" };
  lookups = 1;
  knocks.length = 0;
  dials = 0;
  assert.equal(await dialer.connect("bob"), null);
  assert.equal(dials, 1);
  assert.deepEqual(events.map((e) => (e as { code: string }).code), ["PEER_UNANSWERED"]);
});

Deno.test("dial order: candidates the phonebook reached first, then every other one, each in listed order", () => {
  const lan = { host: "192.168.1.10", port: 4000 };
  const v6 = { host: "2001:db8::5", port: 4000 };
  const pub = { host: "198.18.0.5", port: 4000 };
  const mapped = { host: "198.18.0.5", port: 41000, via: "mapping" as const };
  assert.deepEqual(dialOrder([lan, v6, pub, mapped], [mapped, pub]), [pub, mapped, lan, v6]);
  assert.deepEqual(dialOrder([lan, v6, pub], []), [lan, v6, pub], "nothing checked: the listed order");
  assert.deepEqual(
    dialOrder([lan, pub], [{ host: "203.0.113.1", port: 1 }]),
    [lan, pub],
    "an address that is not a candidate adds nothing",
  );
  assert.deepEqual(dialOrder([pub, { host: "::ffff:198.18.0.5", port: 4000 }, lan], [pub]), [pub, lan]);
});

Deno.test("dialer: the first attempt goes to the reached candidate, the unreached ones follow, none dropped", async () => {
  const lan = { host: "192.168.1.10", port: 4000 };
  const pub = { host: "198.18.0.5", port: 4000 };
  const lan2 = { host: "10.0.0.7", port: 4000 };
  const tried: string[] = [];
  const over: string[] = [];
  const session = { path: null } as unknown as PeerSession;
  const entry: DialEntry = {
    online: true,
    address: lan,
    candidates: [lan, lan2, pub],
    reachable: [pub],
    fingerprint: "ab",
    revoked: false,
  };
  let failFirst = true;
  const dialer = new Dialer({
    lookup: () => Promise.resolve(entry),
    active: () => null,
    dial: () => Promise.reject(new Error("not used with reach")),
    noteListed: () => {},
    emit: () => {},
  }, {
    connect: (host, port) => {
      tried.push(`${host}:${port}`);
      // The reached one refuses this time (the peer moved); the others are still tried, in order.
      if (failFirst && host === pub.host) return Promise.reject(new Error("ECONNREFUSED"));
      return Promise.resolve(new net.Socket());
    },
    relayCircuit: () => Promise.reject(new Error("no relay")),
    haveRelay: () => false,
    dialOver: (_n, socket, path) => {
      socket.destroy();
      over.push(`${path.kind} ${path.address.host}`);
      return Promise.resolve(session);
    },
  });
  assert.equal(await dialer.connect("bob"), session);
  assert.equal(tried[0], "198.18.0.5:4000", "the first attempt is the reached candidate");
  assert.deepEqual(tried.slice(0, 2), ["198.18.0.5:4000", "192.168.1.10:4000"]);
  assert.deepEqual(over, ["lan 192.168.1.10"], "an unreached LAN candidate still gets the session");
  failFirst = false;
  tried.length = 0;
  over.length = 0;
  assert.equal(await dialer.connect("bob"), session);
  assert.deepEqual(over, ["public 198.18.0.5"]);
  assert.equal(tried[0], "198.18.0.5:4000");
});
