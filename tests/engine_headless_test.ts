import { formatAddress } from "../client/candidates.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { DirectoryClient } from "../client/directory_client.ts";
import { revokeUser } from "../server/mod.ts";
import { messageJson } from "../client/headless.ts";
import type { ChatMessage } from "../client/engine_types.ts";
import { runCli } from "./helpers/cli.ts";
import { enrollUser, type HeadlessEvent, spawnHeadless, startPhonebook } from "./helpers/chat.ts";

Deno.test("headless JSON lines: two processes chat both ways; bad commands get error events and change nothing", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = spawnHeadless(aliceHome.dir);
  const bob = spawnHeadless(bobHome.dir);
  try {
    const ra = await alice.waitEvent((e) => e.event === "ready", 30_000, "alice ready");
    await bob.waitEvent((e) => e.event === "ready", 30_000, "bob ready");
    assert.equal(ra.name, "alice");
    // By default every interface (IPv6 and IPv4 on one socket), on a port kept in the home folder.
    assert.match(String(ra.address), /^(\[::\]|0\.0\.0\.0):\d+$/);
    assert.equal(ra.time, "verified");

    await alice.cmd({ cmd: "send", to: "bob", text: "hi bob", ref: 1 });
    const q = await alice.waitEvent((e) => e.event === "queued" && e.ref === 1);
    const id = q.id as string;
    assert.match(id, /^[0-9a-f]{32}$/);
    const got = await bob.waitEvent((e) => e.event === "message" && e.id === id);
    assert.equal(got.from, "alice");
    assert.equal(got.text, "hi bob");
    assert.equal(got.expiresAt, null);
    assert.equal(typeof got.sentAt, "number");
    await alice.waitEvent((e) => e.event === "delivered" && e.id === id);
    await bob.cmd({ cmd: "read", id });
    await alice.waitEvent((e) => e.event === "read" && e.id === id);

    await bob.cmd({ cmd: "send", to: "alice", text: "short-lived", ttl: "20s" });
    const back = await alice.waitEvent((e) => e.event === "message" && e.text === "short-lived");
    assert.ok(typeof back.expiresAt === "number" && back.expiresAt <= (back.sentAt as number) + 20_000);
    assert.equal(back.ttlMode, "send");

    // Bad commands: an error event each, with a stable code; nothing changes.
    const bad: [unknown, string][] = [
      ["not json", "BAD_JSON"],
      [[1, 2], "BAD_JSON"],
      [{ nocmd: true }, "BAD_COMMAND"],
      [{ cmd: "format-disk" }, "UNKNOWN_COMMAND"],
      [{ cmd: "send", to: "bob" }, "BAD_FIELD"],
      [{ cmd: "send", to: "bob", text: "x", ttl: "0s" }, "BAD_TTL"],
      [{ cmd: "send", to: "bob", text: "x", ttl: "forever" }, "BAD_TTL"],
      [{ cmd: "send", to: "bob", text: "x", ttl: "10s", ttlMode: "never" }, "BAD_TTL"],
      [{ cmd: "send", to: "Bob Smith!", text: "x" }, "BAD_NAME"],
      [{ cmd: "send", to: "alice", text: "x" }, "SELF"],
      [{ cmd: "send", to: "bob", text: "" }, "BAD_TEXT"],
      [{ cmd: "read", id: "f".repeat(32) }, "NOT_FOUND"],
      [{ cmd: "accept-key", name: "bob" }, "NO_PENDING_KEY"],
      [{ cmd: "history" }, "BAD_FIELD"],
    ];
    for (const [i, [c, code]] of bad.entries()) {
      const line = typeof c === "string" ? c : JSON.stringify(c);
      const before = alice.events.filter((e) => e.event === "error").length;
      await alice.rawLine(line);
      await alice.waitEvent(
        () => alice.events.filter((e) => e.event === "error").length > before,
        10_000,
        `error #${i}`,
      );
      const err = alice.events.filter((e) => e.event === "error")[before];
      assert.equal(err.code, code, line);
    }
    await alice.cmd({ cmd: "history", with: "bob", ref: "h" });
    const h = await alice.waitEvent((e) => e.event === "history" && e.ref === "h");
    const msgs = h.messages as HeadlessEvent[];
    assert.deepEqual(msgs.map((m) => m.text), ["hi bob", "short-lived"]);
    await alice.cmd({ cmd: "contacts", ref: "c" });
    const c = await alice.waitEvent((e) => e.event === "contacts" && e.ref === "c");
    const contacts = c.contacts as { name: string; online: boolean }[];
    assert.deepEqual(contacts.map((x) => x.name), ["bob"]);
    assert.equal(contacts[0].online, true);

    assert.equal(await alice.quit(), 0);
    await bob.waitEvent((e) => e.event === "peer-offline" && e.name === "alice");
    assert.equal(await bob.quit(), 0);
  } finally {
    await alice.kill();
    await bob.kill();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

Deno.test("headless: SIGTERM withdraws our address and exits 0; an unenrolled home is a clear error", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const look = new DirectoryClient({
    url: aliceHome.server,
    caPem: aliceHome.caPem,
    certPem: aliceHome.certPem,
    keyPem: aliceHome.keyPem,
  });
  const empty = await Deno.makeTempDir({ prefix: "securechat-empty-" });
  const alice = spawnHeadless(aliceHome.dir);
  try {
    const ready = await alice.waitEvent((e) => e.event === "ready", 30_000, "ready");
    const entry = await look.lookup("alice");
    assert.equal(entry?.online, true);
    assert.equal(formatAddress(entry!.address!), ready.advertised);
    assert.equal(await alice.kill("SIGTERM"), 0);
    assert.equal((await look.lookup("alice"))?.online, false);

    const r = await runCli(["chat", "--headless", "--home", empty]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not enrolled/);
    const bad = await runCli(["chat", "--headless", "--home", aliceHome.dir, "--listen", "nowhere"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /bad --listen/);
  } finally {
    look.close();
    await alice.kill();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("headless: an unread 'after read' message carries its unread bound; other messages do not", () => {
  const base: ChatMessage = {
    id: "a".repeat(32),
    peer: "alice",
    from: "alice",
    direction: "in",
    text: "open me",
    sentAt: 1_000,
    expiresAt: null,
    ttlMs: 5_000,
    ttlMode: "read",
    state: "delivered",
  };
  const unread = JSON.parse(
    JSON.stringify(messageJson({ ...base, unreadExpiresAt: 1_000 + 7 * 86_400_000 })),
  );
  assert.equal(unread.unreadExpiresAt, 1_000 + 7 * 86_400_000);
  assert.equal(unread.expiresAt, null);
  const plain = JSON.parse(JSON.stringify(messageJson({ ...base, ttlMs: null, ttlMode: null })));
  assert.equal("unreadExpiresAt" in plain, false);
});

Deno.test("headless: every send's queued answer (with ref) comes before its sent/delivered; an unknown user is refused and adds no contact; one process per home", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  const bobHome = await enrollUser(pb, "bob");
  const alice = spawnHeadless(aliceHome.dir);
  const bob = spawnHeadless(bobHome.dir);
  try {
    await alice.waitEvent((e) => e.event === "ready", 30_000, "alice ready");
    await bob.waitEvent((e) => e.event === "ready", 30_000, "bob ready");
    // Warm the session up, so later sends go out at once (the race the ordering rule is about).
    await alice.cmd({ cmd: "send", to: "bob", text: "warm-up", ref: "w" });
    const w = await alice.waitEvent((e) => e.event === "queued" && e.ref === "w");
    await alice.waitEvent((e) => e.event === "delivered" && e.id === w.id);
    // alice is a stranger to bob (he never wrote to her): he accepts her message request first.
    await bob.waitEvent((e) => e.event === "request" && e.from === "alice");
    await bob.cmd({ cmd: "accept", name: "alice", ref: "a" });
    await bob.waitEvent((e) => e.event === "accepted" && e.ref === "a");
    const N = 20;
    for (let i = 0; i < N; i++) await alice.cmd({ cmd: "send", to: "bob", text: `burst ${i}`, ref: i });
    for (let i = 0; i < N; i++) {
      const q = await alice.waitEvent((e) => e.event === "queued" && e.ref === i, 15_000, `queued ${i}`);
      await alice.waitEvent((e) => e.event === "delivered" && e.id === q.id, 15_000, `delivered ${i}`);
      const at = (kind: string) => alice.events.findIndex((e) => e.event === kind && e.id === q.id);
      assert.ok(at("queued") < at("sent"), `message ${i}: sent before queued`);
      assert.ok(at("queued") < at("delivered"), `message ${i}: delivered before queued`);
    }

    await alice.cmd({ cmd: "send", to: "nosuchuser", text: "hello?", ref: "u" });
    const err = await alice.waitEvent((e) => e.event === "error" && e.ref === "u");
    assert.equal(err.code, "UNKNOWN_USER");
    assert.match(String(err.message), /no user "nosuchuser" in the phonebook/);
    await alice.cmd({ cmd: "contacts", ref: "c" });
    const c = await alice.waitEvent((e) => e.event === "contacts" && e.ref === "c");
    assert.deepEqual((c.contacts as { name: string }[]).map((x) => x.name), ["bob"], "no contact added");
    await alice.cmd({ cmd: "history", with: "nosuchuser", ref: "h" });
    const h = await alice.waitEvent((e) => e.event === "history" && e.ref === "h");
    assert.deepEqual(h.messages, [], "nothing queued");

    // bob is revoked while his session to alice is still open: alice no longer shows him online.
    await revokeUser(join(pb.dir, "data"), "bob");
    await alice.cmd({ cmd: "contacts", ref: "c2" });
    const c2 = await alice.waitEvent((e) => e.event === "contacts" && e.ref === "c2");
    const bobEntry = (c2.contacts as { name: string; online: boolean; revoked?: boolean }[])
      .find((x) => x.name === "bob");
    assert.equal(bobEntry?.revoked, true);
    assert.equal(bobEntry?.online, false, "a revoked user is never shown online");

    // A second chat on alice's home is refused while the first runs.
    const second = await runCli(["chat", "--headless", "--home", aliceHome.dir]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /another securechat chat is already running on .* \(pid \d+\)/);
    assert.equal(await alice.quit(), 0);
    // Let go with the process: the next chat on the home starts (and quits at the end of its input).
    const after = await runCli(["chat", "--headless", "--home", aliceHome.dir], { stdin: "" });
    assert.equal(after.code, 0, after.stderr);
    assert.match(after.stdout, /"event":"ready"/);
    assert.equal(await bob.quit(), 0);
  } finally {
    await alice.kill();
    await bob.kill();
    await pb.close();
    await Deno.remove(aliceHome.dir, { recursive: true });
    await Deno.remove(bobHome.dir, { recursive: true });
  }
});

Deno.test("headless: a phonebook that is down at start is said right after ready, with the reason", async () => {
  const pb = await startPhonebook();
  const aliceHome = await enrollUser(pb, "alice");
  await pb.close();
  const alice = spawnHeadless(aliceHome.dir);
  try {
    const ready = await alice.waitEvent((e) => e.event === "ready", 60_000, "ready");
    const at = alice.events.indexOf(ready);
    const said = await alice.waitEvent(
      (e) => e.event === "log" && /^phonebook unreachable: /.test(String(e.text)),
      5_000,
      "the phonebook said down",
    );
    assert.equal(said.level, "error");
    assert.equal(alice.events.indexOf(said), at + 1, "the first thing after ready");
    assert.equal(await alice.quit(), 0);
  } finally {
    await alice.kill();
    await Deno.remove(aliceHome.dir, { recursive: true });
  }
});
