/**
 * Renewal in a running engine against a real phonebook: bob's trusted time reaches two thirds of his
 * certificate's lifetime while the phonebook is down; the engine says "renewing" with the reason, retries
 * with backoff, and renews with the same key once the phonebook is back. The session that was open carries
 * on, home/cert.pem holds the new certificate, and a new session gets it without a key-change alarm.
 * Bob's clock is the real trusted clock moved by an offset the test sets (what trusted time would say 21
 * days later); the phonebook runs on real time, so for it the certificate is simply due, not lapsed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { certTimeOf, CHAT_DB_FILE, ChatEngine, type ClockLike } from "../client/engine.ts";
import { DirectoryClient } from "../client/directory_client.ts";
import { loadHome, writeCertificate } from "../client/home.ts";
import type { HomeState } from "../client/home.ts";
import { type TimeStatus, TrustedClock, type TrustedTime } from "../clock/mod.ts";
import { keyFingerprintOf, normalizeSerial, pemToDer, x509 } from "../pki/mod.ts";
import { enrollUser, EventLog, startClient, startPhonebook, until } from "./helpers/chat.ts";
import { RENEW_BACKOFF_FIRST_MS } from "../client/renewal.ts";

const DAY = 86400_000;

/** The trusted clock, read `offsetMs` later (what it would say after that long). */
class OffsetClock implements ClockLike {
  offsetMs = 0;
  constructor(readonly inner: TrustedClock) {}
  #shift(t: TrustedTime | null): TrustedTime | null {
    return t && {
      earliestMs: t.earliestMs + this.offsetMs,
      latestMs: t.latestMs + this.offsetMs,
      nowMs: t.nowMs + this.offsetMs,
    };
  }
  start() {
    this.inner.start();
  }
  stop() {
    this.inner.stop();
  }
  sync() {
    return this.inner.sync();
  }
  now() {
    return this.#shift(this.inner.now());
  }
  status(): TimeStatus {
    const s = this.inner.status();
    return { ...s, time: this.#shift(s.time) };
  }
  deadlinePassed(d: number) {
    return this.inner.deadlinePassed(d - this.offsetMs);
  }
  subscribe(cb: (s: TimeStatus) => void) {
    return this.inner.subscribe(cb);
  }
  proveTime(data: Uint8Array) {
    return this.inner.proveTime(data);
  }
}

async function startOffsetEngine(home: HomeState, log: EventLog) {
  const clock = new OffsetClock(
    new TrustedClock({ servers: home.roughtime, proofServers: home.roughtime, queryTimeoutMs: 1000 }),
  );
  const directory = new DirectoryClient({
    url: home.server,
    caPem: home.caPem,
    certPem: home.certPem,
    keyPem: home.keyPem,
    certTime: () => certTimeOf(clock),
  });
  const engine = await ChatEngine.start({
    name: home.name,
    certPem: home.certPem,
    keyPem: home.keyPem,
    caPem: home.caPem,
    dbPath: join(home.dir, CHAT_DB_FILE),
    directory,
    clock,
    timeKeys: home.roughtime.map((r) => r.publicKey),
    outboxRetryMs: 200,
    renewalCheckMs: 200,
    onEvent: log.push,
    saveCertificate: (pem) => writeCertificate(home.dir, pem),
  });
  return { engine, clock };
}

const serialOf = (pem: string) =>
  normalizeSerial(new x509.X509Certificate(pemToDer(pem, "CERTIFICATE")).serialNumber);

Deno.test("renewal: phonebook down when it falls due, renewed with the same key when back; sessions carry on", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  let alice = await startClient(aliceHome);
  const bobLog = new EventLog();
  const bob = await startOffsetEngine(bobHome, bobLog);
  try {
    assert.equal(bob.engine.certificateStatus().state, "valid");
    const m1 = await alice.engine.send("bob", "before");
    await bobLog.waitFor("message", (e) => e.message.id === m1.id);
    const session = bob.engine.connection("alice")!.sessionId;

    // The phonebook goes away, and bob's trusted time reaches the renewal point.
    const port = pb.server.port;
    const rtPort = pb.server.roughtime!.port;
    await pb.server.close();
    bob.clock.offsetMs = 21 * DAY;
    const failing = await bobLog.waitFor(
      "certificate",
      (e) => e.status.state === "renewing" && e.status.lastError !== null,
      10_000,
    );
    assert.match(failing.status.lastError!, /cannot reach the directory/);
    assert.equal(bobLog.of("log").some((e) => /renewal failed .*trying again in/.test(e.text)), true);

    // Back on the same ports: the next retry (after the backoff) renews.
    const { startDirectoryServer } = await import("../server/mod.ts");
    pb.server = await startDirectoryServer({
      dataDir: join(pb.dir, "data"),
      port,
      roughtime: { hostname: "127.0.0.1", port: rtPort },
      onError: () => {},
    });
    const renewed = await bobLog.waitFor(
      "certificate",
      (e) => e.status.notAfter > failing.status.notAfter,
      RENEW_BACKOFF_FIRST_MS * 8,
    );
    assert.equal(renewed.status.lastError, null);
    // The phonebook (on real time) issued from its own now, which bob's moved clock finds already due: it
    // is not asked again in a loop, and bob says why.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(
      bobLog.of("log").filter((e) => /^certificate renewed/.test(e.text)).length,
      1,
      "renewed once",
    );
    assert.ok(bobLog.of("log").some((e) => /phonebook's clock may be behind ours/.test(e.text)));
    bob.clock.offsetMs = 0;
    await bobLog.waitFor(
      "certificate",
      (e) => e.status.state === "valid" && e.status.notAfter === renewed.status.notAfter,
    );

    // enroll's file holds the new certificate, for the same key.
    const onDisk = await loadHome(bobHome.dir);
    assert.notEqual(serialOf(onDisk.certPem), serialOf(bobHome.certPem));
    assert.equal(keyFingerprintOf(onDisk.certPem), keyFingerprintOf(bobHome.certPem));
    assert.equal(bob.engine.ownFingerprint(), keyFingerprintOf(bobHome.certPem), "the same fingerprint");

    // The open session carried on.
    assert.equal(bob.engine.connection("alice")?.sessionId, session, "not replaced");
    const m2 = await alice.engine.send("bob", "during");
    await bobLog.waitFor("message", (e) => e.message.id === m2.id);

    // A new session gets the renewed certificate, silently.
    await alice.stop();
    alice = await startClient(aliceHome);
    const m3 = await alice.engine.send("bob", "after");
    await bobLog.waitFor("message", (e) => e.message.id === m3.id);
    await until(() => alice.engine.peerInfo("bob") !== null, 5000, "alice saw bob");
    assert.equal(
      alice.engine.peerInfo("bob")!.serial,
      serialOf(onDisk.certPem),
      "the listener presents the new one",
    );
    assert.equal(alice.log.of("key-changed").length, 0);
    // The phonebook lists it, and bob's phonebook client authenticates with it (publishing works).
    const entry = await new DirectoryClient({ url: pb.server.url, caPem: bobHome.caPem }).lookup("bob");
    assert.equal(entry?.certPem && serialOf(entry.certPem), serialOf(onDisk.certPem));
  } finally {
    await bob.engine.close();
    await alice.stop();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});
