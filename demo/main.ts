/**
 * `deno task demo`: securechat on one machine with one command. Starts a phonebook (directory, CA and
 * Roughtime server) on loopback, enrolls two users in a temporary folder, runs "assistant" in this process as
 * a bot that answers and sends self-destructing messages, and opens the chat screen as "you". Everything is
 * removed on exit. The folder lives under `.securechat-demo/` in the working directory so the task can run
 * with write access to that folder only.
 */
import { join } from "node:path";
import { startDirectoryServer } from "../server/mod.ts";
import type { ChatEngineApi, ChatMessage, EngineEvent } from "../client/engine_types.ts";
import { startEngineFromHome } from "../client/engine.ts";
import { enroll } from "../client/enroll.ts";
import { loadHome } from "../client/home.ts";
import { formatTtl } from "../client/tui/format.ts";

/** Where demo runs put their temporary folders (relative to the working directory; git-ignored). */
export const DEMO_ROOT = ".securechat-demo";
export const USER_NAME = "you";
export const ASSISTANT_NAME = "assistant";
/** Lifetime of the assistant's self-destructing message. */
export const SELF_DESTRUCT_TTL_MS = 30_000;
/** Longest quote of the user's text in a reply. */
const QUOTE_MAX = 60;

/** Opens the chat engine of an enrolled home folder (tests pass their own). */
export type OpenEngine = (home: string) => Promise<ChatEngineApi>;

/** The real engine, listening on loopback only. */
export const openHomeEngine: OpenEngine = async (home) =>
  await startEngineFromHome(await loadHome(home), { listen: { host: "127.0.0.1", port: 0 } });

export interface AssistantHandle {
  /** Sends the welcome and the self-destructing message (once; again later only if sending failed). */
  greet(): Promise<void>;
  stop(): void;
  /** Errors the bot met (a send refused...): shown nowhere on the chat screen, kept for tests. */
  readonly errors: string[];
}

function quote(text: string): string {
  const one = text.replace(/\s+/g, " ").trim();
  return one.length > QUOTE_MAX ? one.slice(0, QUOTE_MAX - 1) + "\u2026" : one;
}

/** The assistant's answer to one message: it repeats the lifetime back, so the countdown is visible both ways. */
export function replyFor(m: ChatMessage, count: number): { text: string; ttlMs: number | null } {
  if (m.ttlMs !== null) {
    return {
      text:
        `Got "${quote(m.text)}". It lives ${formatTtl(m.ttlMs)} and then vanishes from both our screens ` +
        `and disks; my answer has the same lifetime.`,
      ttlMs: m.ttlMs,
    };
  }
  const tips = [
    "Try /msg a secret --ttl 10s to send a message that self-destructs.",
    "/ttl 1m gives every new message in this conversation a one-minute lifetime (/ttl off to stop).",
    "/verify shows our fingerprints as text and QR code, to compare out of band.",
    "The right pane shows my certificate and the TLS session; F1 lists every key.",
  ];
  return { text: `You said "${quote(m.text)}". ${tips[count % tips.length]}`, ttlMs: null };
}

/**
 * Makes `engine` answer every message from `user`, greet them once they are reachable, and send one message
 * that self-destructs after `selfDestructMs`.
 */
export function attachAssistant(
  engine: ChatEngineApi,
  user: string,
  selfDestructMs = SELF_DESTRUCT_TTL_MS,
): AssistantHandle {
  const errors: string[] = [];
  let greeted = false;
  let greeting = false;
  let answered = 0;
  let stopped = false;
  const send = (text: string, ttlMs: number | null) =>
    engine.send(user, text, { ttlMs }).then(() => true, (e: unknown) => {
      errors.push(e instanceof Error ? e.message : String(e));
      return false;
    });
  const greet = async () => {
    if (greeted || greeting || stopped) return;
    greeting = true;
    const ok = await send(
      `Hi ${user}! I'm the demo assistant: a second securechat user on this machine, talking to you over ` +
        "mutually authenticated TLS 1.3. Write me anything.",
      null,
    );
    if (ok) {
      greeted = true;
      await send(
        `This message self-destructs ${formatTtl(selfDestructMs)} after I sent it: watch its countdown.`,
        selfDestructMs,
      );
    }
    greeting = false;
  };
  const off = engine.subscribe((e: EngineEvent) => {
    if (stopped) return;
    if (e.event === "peer-online" && e.name === user) void greet();
    if (e.event === "message" && e.message.direction === "in" && e.message.from === user) {
      const r = replyFor(e.message, answered++);
      engine.markRead(e.message.id);
      void greet().then(() => send(r.text, r.ttlMs));
    }
  });
  engine.contacts().then((cs) => {
    if (cs.some((c) => c.name === user && c.online)) void greet();
  }, (e: unknown) => errors.push(String(e)));
  return {
    errors,
    greet,
    stop: () => {
      stopped = true;
      off();
    },
  };
}

export interface RunningDemo {
  dir: string;
  userHome: string;
  assistantHome: string;
  user: ChatEngineApi;
  assistant: ChatEngineApi;
  bot: AssistantHandle;
  /** Closes the assistant, the phonebook and removes the folder (the user's engine is closed by the UI). */
  close(): Promise<void>;
}

/** Starts the phonebook, enrolls both users and opens both engines under `root`. */
export async function startDemo(
  opts: { root?: string; openEngine?: OpenEngine; selfDestructMs?: number } = {},
): Promise<RunningDemo> {
  const root = opts.root ?? DEMO_ROOT;
  await Deno.mkdir(root, { recursive: true });
  const dir = await Deno.makeTempDir({ dir: root, prefix: "run-" });
  const undo: (() => Promise<void>)[] = [() => removeRun(root, dir)];
  const unwind = async () => {
    for (const f of undo.reverse()) await f().catch(() => {});
  };
  try {
    const openEngine = opts.openEngine ?? openHomeEngine;
    const phonebook = await startDirectoryServer({
      dataDir: join(dir, "phonebook"),
      hostname: "127.0.0.1",
      port: 0,
      roughtime: { hostname: "127.0.0.1", port: 0 },
      onError: () => {}, // the chat screen owns the terminal: internal errors must not scribble on it
    });
    undo.push(() => phonebook.close());
    const userHome = join(dir, USER_NAME);
    const assistantHome = join(dir, ASSISTANT_NAME);
    for (const [name, home] of [[ASSISTANT_NAME, assistantHome], [USER_NAME, userHome]]) {
      await enroll({ server: phonebook.url, caFingerprint: phonebook.caFingerprint, name, home });
    }
    const assistant = await openEngine(assistantHome);
    undo.push(() => assistant.close());
    const bot = attachAssistant(assistant, USER_NAME, opts.selfDestructMs);
    undo.push(() => Promise.resolve(bot.stop()));
    const user = await openEngine(userHome);
    // The assistant is the demo's own contact, not a stranger: its greeting is a conversation, not a message
    // request the newcomer must accept first.
    user.acceptRequest?.(ASSISTANT_NAME);
    // The user is online now (its engine published its address): the assistant says hello first.
    void bot.greet();
    let closed = false;
    return {
      dir,
      userHome,
      assistantHome,
      user,
      assistant,
      bot,
      close: async () => {
        if (closed) return;
        closed = true;
        await unwind();
      },
    };
  } catch (e) {
    await unwind();
    throw e;
  }
}

/** Removes one run's folder, and the demo root when no other run is using it. */
async function removeRun(root: string, dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  try {
    await Deno.remove(root); // fails (and stays) when another demo is running
  } catch {
    // Not empty: another run is in progress.
  }
}

/** Prints a line, unless the terminal is gone (window closed): cleaning up matters more than saying so. */
function say(line: string): void {
  try {
    console.log(line);
  } catch {
    // EIO/EPIPE: nobody is reading.
  }
}

async function main(): Promise<number> {
  if (!Deno.stdin.isTerminal() || !Deno.stdout.isTerminal()) {
    console.error("securechat demo: needs a terminal (run it in a terminal window)");
    return 1;
  }
  console.log("Starting a local phonebook and two users (you and assistant)...");
  // Ctrl+C before the chat screen is up: clean up instead of leaving a running phonebook folder behind.
  let demo: RunningDemo | null = null;
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
  };
  Deno.addSignalListener("SIGINT", onSigint);
  try {
    demo = await startDemo();
  } catch (e) {
    console.error(`securechat demo: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onSigint);
  }
  try {
    if (interrupted) {
      await demo.user.close();
      return 130;
    }
    const { runTui } = await import("../client/tui/mod.ts");
    await runTui(demo.user, { home: demo.userHome });
    return 0;
  } catch (e) {
    say(`securechat demo: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  } finally {
    await demo.close();
    say("Demo stopped: phonebook closed, temporary users removed.");
  }
}

if (import.meta.main) Deno.exit(await main());
