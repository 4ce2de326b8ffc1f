/**
 * The relay client's control connection on loopback against a relay of the test's own (real TLS, our CA):
 * one that answers pings keeps its connection; one that goes silent (what a network that went away under the
 * connection looks like: no reset, nothing) is dropped after RELAY_SILENCE_PINGS ping intervals and made
 * again; reconnectNow() (our network changed) makes it again at once, without the pause a loss earns.
 */
import assert from "node:assert/strict";
import tls from "node:tls";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";
import { exportPrivateKeyPem, generateKeyPair, issueServerCertificate } from "../pki/mod.ts";
import { RELAY_SILENCE_PINGS, RelayClient } from "../client/relay_client.ts";

const PING_MS = 150;

interface FakeRelay {
  port: number;
  /** Control connections accepted so far. */
  connections(): number;
  /** Pings received so far. */
  pings(): number;
  close(): Promise<void>;
}

/** A relay that says ready to every control connection and answers pings with pong while `answering()`. */
async function fakeRelay(
  answering: () => boolean,
): Promise<FakeRelay & { ca: Awaited<ReturnType<typeof makeTestCa>> }> {
  const ca = await makeTestCa();
  const keys = await generateKeyPair("p256");
  const cert = await issueServerCertificate(ca.material, ["127.0.0.1"], keys);
  let connections = 0;
  let pings = 0;
  const sockets = new Set<tls.TLSSocket>();
  const srv = tls.createServer({
    cert: cert.toString("pem"),
    key: await exportPrivateKeyPem(keys),
    ca: ca.certPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
  }, (s) => {
    connections++;
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    s.on("error", () => {});
    s.write(JSON.stringify({ t: "ready", name: "alice" }) + "\n");
    let pending = "";
    s.on("data", (d: Uint8Array) => {
      pending += new TextDecoder().decode(d);
      let i;
      while ((i = pending.indexOf("\n")) >= 0) {
        const line = JSON.parse(pending.slice(0, i));
        pending = pending.slice(i + 1);
        if (line.t === "ping") {
          pings++;
          if (answering()) s.write(JSON.stringify({ t: "pong" }) + "\n");
        }
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  return {
    ca,
    port: (srv.address() as { port: number }).port,
    connections: () => connections,
    pings: () => pings,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

async function until(what: string, f: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function clientOf(
  relay: Awaited<ReturnType<typeof fakeRelay>>,
  logs: string[],
  states: boolean[],
  pingMs = PING_MS,
) {
  const leaf = await makeTestLeaf(relay.ca, "alice");
  const c = new RelayClient({
    relay: { host: "127.0.0.1", port: relay.port },
    certPem: leaf.certPem,
    keyPem: leaf.keyPem,
    caPem: relay.ca.certPem,
    onIncoming: () => {},
    onState: (up) => states.push(up),
    log: (_level, text) => logs.push(text),
    pingMs,
  });
  await c.start();
  return c;
}

Deno.test("relay client: a relay that answers its pings keeps one control connection", async () => {
  const relay = await fakeRelay(() => true);
  const logs: string[] = [];
  const states: boolean[] = [];
  // A slower ping here: a loaded machine that stalls the event loop past the bound would see stale silence.
  const c = await clientOf(relay, logs, states, 300);
  try {
    assert.equal(c.connected, true, logs.join("; "));
    // Well past the silence bound (in pings sent), with every ping answered.
    await until("pings", () => relay.pings() >= Math.ceil(RELAY_SILENCE_PINGS) * 2);
    assert.equal(relay.connections(), 1, logs.join("; "));
    assert.deepEqual(states, [true]);
    assert.equal(c.connected, true);
  } finally {
    c.close();
    await relay.close();
  }
});

Deno.test("relay client: a relay gone silent is taken as lost after its ping intervals, and connected to again", async () => {
  let answering = true;
  const relay = await fakeRelay(() => answering);
  const logs: string[] = [];
  const states: boolean[] = [];
  const c = await clientOf(relay, logs, states);
  try {
    await until("a first pong", () => relay.pings() >= 1);
    // The network under the connection goes away: the relay hears pings but nothing comes back.
    answering = false;
    const silentFrom = performance.now();
    await until("the drop", () => states.includes(false));
    const after = performance.now() - silentFrom;
    // Not before RELAY_SILENCE_PINGS intervals of silence (the last word was at most one interval earlier).
    assert.ok(after >= PING_MS * (RELAY_SILENCE_PINGS - 1), `dropped after ${after.toFixed(0)} ms`);
    assert.ok(
      logs.some((l) => /^relay 127\.0\.0\.1:\d+: no answer for \d+ s; retrying$/.test(l)),
      logs.join("; "),
    );
    answering = true;
    await until("the new connection", () => relay.connections() === 2 && c.connected);
    assert.deepEqual(states, [true, false, true]);
  } finally {
    c.close();
    await relay.close();
  }
});

Deno.test("relay client: reconnectNow makes the control connection again at once, and says why", async () => {
  const relay = await fakeRelay(() => true);
  const logs: string[] = [];
  const states: boolean[] = [];
  const c = await clientOf(relay, logs, states);
  try {
    const s = performance.now();
    c.reconnectNow();
    await until("the new connection", () => relay.connections() === 2 && c.connected);
    // The pause after a loss starts at 1 s and doubles; this one was the first pause, not a grown one.
    assert.ok(performance.now() - s < 5_000);
    assert.ok(logs.some((l) => /: our network changed; retrying$/.test(l)), logs.join("; "));
    c.reconnectNow();
    await until("the third connection", () => relay.connections() === 3 && c.connected);
    assert.deepEqual(states, [true, false, true, false, true]);
  } finally {
    c.close();
    await relay.close();
  }
});
