/**
 * The demo without a terminal: the real phonebook, enrollment and engines that `deno task demo` starts, the
 * assistant's behaviour (greeting, self-destructing message, answers that mirror a lifetime), and the cleanup.
 * Also the UI's quit path (runTuiOn): Ctrl+C closes the engine, and a hanging close does not hang the exit.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { join } from "node:path";
import { CliError } from "../cli_error.ts";
import { attachAssistant, replyFor, startDemo } from "../demo/main.ts";
import type { ChatMessage, EngineEvent } from "../client/engine_types.ts";
import { runTuiOn } from "../client/tui/mod.ts";
import { contact, FakeEngine } from "./helpers/fake_engine.ts";

/** Collects events and waits (bounded) for one that matches. */
function recorder(engine: { subscribe(l: (e: EngineEvent) => void): () => void }) {
  const events: EngineEvent[] = [];
  const off = engine.subscribe((e) => events.push(e));
  return {
    events,
    off,
    async waitFor<T extends EngineEvent>(
      what: string,
      match: (e: EngineEvent) => e is T,
      ms = 15_000,
    ): Promise<T> {
      const end = performance.now() + ms;
      while (performance.now() < end) {
        const hit = events.find(match);
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`timed out waiting for ${what}; got ${events.map((e) => e.event).join(",")}`);
    },
  };
}

type MessageEvent = Extract<EngineEvent, { event: "message" }>;
const isMessage = (pred: (m: ChatMessage) => boolean) => (e: EngineEvent): e is MessageEvent =>
  e.event === "message" && pred(e.message);

Deno.test("demo: replies mirror a lifetime and quote the text briefly", () => {
  const base: ChatMessage = {
    id: "1",
    peer: "you",
    from: "you",
    direction: "in",
    text: "x".repeat(100),
    sentAt: 0,
    expiresAt: null,
    ttlMs: null,
    ttlMode: null,
    state: "delivered",
  };
  const plain = replyFor(base, 0);
  assert.equal(plain.ttlMs, null);
  assert.ok(plain.text.length < 200 && plain.text.includes("\u2026"));
  assert.notEqual(replyFor(base, 1).text, plain.text); // a different tip each time
  const timed = replyFor({ ...base, text: "secret", ttlMs: 10_000, expiresAt: 10_000, ttlMode: "send" }, 0);
  assert.equal(timed.ttlMs, 10_000);
  assert.match(timed.text, /Got "secret"\. It lives 10s/);
});

Deno.test("demo: the assistant greets once, sends one self-destructing message, and answers", async () => {
  const engine = new FakeEngine({ name: "assistant", contacts: [contact("you")] });
  const bot = attachAssistant(engine, "you", 5000);
  try {
    await bot.greet();
    await bot.greet(); // only once
    assert.equal(engine.sent.length, 2);
    assert.equal(engine.sent[0].opts?.ttlMs, null);
    assert.equal(engine.sent[1].opts?.ttlMs, 5000);
    engine.receive("you", "hello", { ttlMs: 7000, ttlMode: "send", expiresAt: Date.now() + 7000 });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(engine.sent.length, 3);
    assert.equal(engine.sent[2].opts?.ttlMs, 7000);
    assert.ok(engine.readMarks.length === 1, "the assistant reads what it answers");
    bot.stop();
    engine.receive("you", "after stop");
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(engine.sent.length, 3);
  } finally {
    bot.stop();
  }
});

Deno.test({
  name: "demo: phonebook, two enrolled users and real engines; greeting, answer, expiry; folder removed",

  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "securechat-demo-test-" });
    const demoRoot = join(root, "demo");
    const demo = await startDemo({ root: demoRoot, selfDestructMs: 3000 });
    const rec = recorder(demo.user);
    try {
      assert.ok((await Deno.stat(demo.userHome)).isDirectory);
      assert.equal(demo.user.name, "you");
      const hello = await rec.waitFor(
        "greeting",
        isMessage((m) => m.from === "assistant" && m.ttlMs === null),
      );
      assert.match(hello.message.text, /demo assistant/);
      // The demo's own contact, accepted up front: no message request to accept before chatting.
      assert.equal(rec.events.some((e) => e.event === "request"), false);
      const contact = (await demo.user.contacts()).find((c) => c.name === "assistant");
      assert.equal(contact?.request ?? false, false, JSON.stringify(contact));
      const burning = await rec.waitFor("self-destructing", isMessage((m) => m.ttlMs === 3000));
      assert.ok(burning.message.expiresAt !== null);
      await rec.waitFor(
        "its expiry",
        (e): e is Extract<EngineEvent, { event: "expired" }> =>
          e.event === "expired" && e.id === burning.message.id,
      );
      assert.ok(!demo.user.history("assistant").some((m) => m.id === burning.message.id));
      const sent = await demo.user.send("assistant", "ping from the test", { ttlMs: 60_000 });
      const answer = await rec.waitFor("answer", isMessage((m) => m.text.includes("ping from the test")));
      assert.equal(answer.message.ttlMs, 60_000, "the answer mirrors the lifetime");
      await rec.waitFor(
        "read receipt",
        (e): e is Extract<EngineEvent, { event: "read" }> => e.event === "read" && e.id === sent.id,
      );
      assert.deepEqual(demo.bot.errors, []);
    } finally {
      rec.off();
      await demo.user.close();
      await demo.close();
    }
    await assert.rejects(Deno.stat(demo.dir), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(demoRoot), Deno.errors.NotFound);
    await Deno.remove(root, { recursive: true });
  },
});

// ---- the quit path of the chat screen ------------------------------------------------------------------------

class StdoutStub extends EventEmitter {
  columns = 80;
  rows = 24;
  isTTY = false;
  last = "";
  write = (s: string, cb?: () => void) => {
    this.last = s;
    cb?.();
    return true;
  };
}

class StdinStub extends EventEmitter {
  isTTY = true;
  private data: string | null = null;
  setEncoding() {}
  setRawMode() {}
  resume() {}
  pause() {}
  ref() {}
  unref() {}
  read = () => {
    const d = this.data;
    this.data = null;
    return d;
  };
  press(s: string) {
    this.data = s;
    this.emit("readable");
  }
}

function renderOptions(stdin: StdinStub) {
  return {
    stdout: new StdoutStub() as unknown as NodeJS.WriteStream,
    stdin: stdin as unknown as NodeJS.ReadStream,
    debug: true,
    exitOnCtrlC: false,
    patchConsole: false,
  };
}

Deno.test("runTuiOn: Ctrl+C closes the engine (withdrawing our address) and returns", async () => {
  const engine = new FakeEngine({ name: "you", contacts: [contact("bob")] });
  const stdin = new StdinStub();
  const done = runTuiOn(engine, { render: renderOptions(stdin) });
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(engine.closed, false);
  stdin.press("\x03");
  await done;
  assert.equal(engine.closed, true);
});

Deno.test("runTuiOn: a signal quits too, and a close that hangs is cut short with an error", async () => {
  const engine = new FakeEngine({ name: "you" });
  let release = () => {};
  engine.close = () => new Promise<void>((r) => (release = r));
  let signal = () => {};
  const quit = new Promise<void>((r) => (signal = r));
  const done = runTuiOn(engine, { render: renderOptions(new StdinStub()), quit, closeTimeoutMs: 200 });
  await new Promise((r) => setTimeout(r, 50));
  signal();
  await assert.rejects(done, (e) => e instanceof CliError && /did not close within 200 ms/.test(e.message));
  release();
});
