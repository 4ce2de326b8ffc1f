/**
 * A month later, on every clock: alice and bob enroll and talk today; then everything runs under
 * `faketime +31d` (the phonebook process and both `chat --headless` processes; the monotonic clock is left
 * alone), so both 30-day certificates lapsed a day ago. Each `chat` renews its certificate with the same
 * key at start (within the phonebook's grace), alice's message reaches bob, and neither sees a key-change
 * alarm. The renewal is visible in enroll's files (cert.pem: new serial, same key) and in the store (the
 * peer's certificate kept in chat.db is the renewed one).
 */
import assert from "node:assert/strict";
import net from "node:net";
import dgram from "node:dgram";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { enroll } from "../client/enroll.ts";
import { loadHome } from "../client/home.ts";
import { CHAT_DB_FILE } from "../client/engine.ts";
import { keyFingerprintOf, normalizeSerial, pemToDer, x509 } from "../pki/mod.ts";
import { type ServeNode, startServeProcess } from "./helpers/serve_process.ts";
import { spawnHeadless, startClient } from "./helpers/chat.ts";
import { withTools } from "./helpers/tools.ts";

/** A TCP and a UDP port free now on loopback (the phonebook must come back on the same ones). */
async function freePorts(): Promise<{ tcp: number; udp: number; relay: number }> {
  const freeTcp = async () => {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    return port;
  };
  const tcp = await freeTcp();
  // The relay too: with a fixed --listen port it would default to the fixed DEFAULT_RELAY_PORT, which any
  // other phonebook on this machine may hold.
  let relay = await freeTcp();
  while (relay === tcp) relay = await freeTcp();
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
  const udp = sock.address().port;
  await new Promise<void>((r) => sock.close(() => r()));
  return { tcp, udp, relay };
}

/** `securechat serve` as its own process, optionally under faketime (wall clock only). */
function serve(
  data: string,
  ports: { tcp: number; udp: number; relay: number },
  faketime?: string,
): Promise<ServeNode> {
  return startServeProcess([
    "--data",
    data,
    "--listen",
    `127.0.0.1:${ports.tcp}`,
    "--roughtime-listen",
    `127.0.0.1:${ports.udp}`,
    "--relay-listen",
    `127.0.0.1:${ports.relay}`,
  ], { faketime, timeoutMs: 30_000 });
}

const serialOf = (pem: string) =>
  normalizeSerial(new x509.X509Certificate(pemToDer(pem, "CERTIFICATE")).serialNumber);

Deno.test(withTools("faketime", {
  name:
    "a month later on every clock: both certificates renew with the same key, the message arrives, no alarm",
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-month-" });
    const data = join(tmp, "data");
    const ports = await freePorts();
    let pb = await serve(data, ports);
    const procs: { kill(): Promise<unknown> }[] = [];
    try {
      const aliceHome = await enroll({
        server: pb.url,
        caFingerprint: pb.caFingerprint,
        name: "alice",
        home: join(tmp, "alice"),
      });
      const bobHome = await enroll({
        server: pb.url,
        caFingerprint: pb.caFingerprint,
        name: "bob",
        home: join(tmp, "bob"),
      });
      // Today: they talk once, so each has pinned the other's key.
      const a = await startClient(aliceHome);
      const b = await startClient(bobHome);
      try {
        const m = await a.engine.send("bob", "see you in a month");
        await b.log.waitFor("message", (e) => e.message.id === m.id, 30_000);
        const r = await b.engine.send("alice", "see you");
        await a.log.waitFor("message", (e) => e.message.id === r.id, 30_000);
      } finally {
        await a.stop();
        await b.stop();
      }

      // 31 days later, for everyone.
      await pb.stop();
      pb = await serve(data, ports, "+31d");
      const bob = spawnHeadless(bobHome.dir, { faketime: "+31d" });
      procs.push(bob);
      const alice = spawnHeadless(aliceHome.dir, { faketime: "+31d" });
      procs.push(alice);
      const bobReady = await bob.waitEvent((e) => e.event === "ready", 60_000, "bob ready");
      const aliceReady = await alice.waitEvent((e) => e.event === "ready", 60_000, "alice ready");
      for (const [who, ready] of [["bob", bobReady], ["alice", aliceReady]] as const) {
        assert.equal(ready.time, "verified", `${who}'s time`);
        const cert = ready.certificate as { state: string; notAfter: number };
        assert.equal(cert.state, "valid", `${who}'s certificate at ready: ${JSON.stringify(cert)}`);
        assert.ok(
          cert.notAfter > Date.now() + 31 * 86400_000 + 25 * 86400_000,
          `${who} renewed for ~30 days`,
        );
      }
      await alice.cmd({ cmd: "send", to: "bob", text: "back from holiday", ref: "s" });
      const got = await bob.waitEvent(
        (e) => e.event === "message" && e.text === "back from holiday",
        30_000,
        "the message at bob",
      );
      assert.equal(got.from, "alice");
      await alice.waitEvent((e) => e.event === "delivered", 30_000, "delivered at alice");
      for (const [who, p] of [["bob", bob], ["alice", alice]] as const) {
        assert.deepEqual(
          p.events.filter((e) => e.event === "key-changed"),
          [],
          `no key-change alarm at ${who}`,
        );
        assert.equal(
          p.events.some((e) => e.event === "log" && /certificate renewed \(same key\)/.test(String(e.text))),
          true,
          `${who} says it renewed`,
        );
      }
      await bob.kill();
      await alice.kill();

      // enroll's files: a new certificate for the same key.
      const bobNow = await loadHome(bobHome.dir);
      const aliceNow = await loadHome(aliceHome.dir);
      assert.notEqual(serialOf(bobNow.certPem), serialOf(bobHome.certPem));
      assert.equal(keyFingerprintOf(bobNow.certPem), keyFingerprintOf(bobHome.certPem));
      assert.notEqual(serialOf(aliceNow.certPem), serialOf(aliceHome.certPem));
      // The store: bob keeps alice's renewed certificate, her key still pinned.
      const db = new DatabaseSync(join(bobHome.dir, CHAT_DB_FILE), { readOnly: true });
      try {
        const row = db.prepare("SELECT pinned_fp, pin_kind, peer_cert FROM contacts WHERE name = 'alice'")
          .get() as {
            pinned_fp: string;
            pin_kind: string;
            peer_cert: Uint8Array;
          };
        assert.equal(row.pinned_fp, keyFingerprintOf(aliceHome.certPem));
        assert.equal(row.pin_kind, "key");
        assert.deepEqual(new Uint8Array(row.peer_cert), pemToDer(aliceNow.certPem, "CERTIFICATE"));
      } finally {
        db.close();
      }
    } finally {
      for (const p of procs) await p.kill().catch(() => {});
      await pb.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
}));
