/**
 * Chat test rig: a real phonebook (directory + CA + Roughtime on loopback, port 0), users enrolled through
 * the real enrollment, engines started from their home folders, and an event recorder with bounded waits.
 */
import { join } from "node:path";
import { startDirectoryServer } from "../../server/mod.ts";
import type { RunningDirectory } from "../../server/mod.ts";
import { enroll } from "../../client/enroll.ts";
import type { HomeState } from "../../client/home.ts";
import { ChatEngine, type HomeEngineOptions, startEngineFromHome } from "../../client/engine.ts";
import type { EngineEvent } from "../../client/engine_types.ts";

export interface Phonebook {
  dir: string;
  server: RunningDirectory;
  close(): Promise<void>;
}

export async function startPhonebook(): Promise<Phonebook> {
  const dir = await Deno.makeTempDir({ prefix: "securechat-pb-" });
  const server = await startDirectoryServer({
    dataDir: join(dir, "data"),
    port: 0,
    roughtime: { hostname: "127.0.0.1", port: 0 },
    onError: () => {},
  });
  return {
    dir,
    server,
    close: async () => {
      await server.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Enrolls `name` in a fresh temporary home folder (removed by the caller with Deno.remove(home.dir)). */
export async function enrollUser(pb: Phonebook, name: string): Promise<HomeState> {
  const home = await Deno.makeTempDir({ prefix: `securechat-${name}-` });
  return await enroll({ server: pb.server.url, caFingerprint: pb.server.caFingerprint, name, home });
}

/** Fast timers for tests; everything else as in production. */
export const TEST_ENGINE_OPTIONS: HomeEngineOptions = {
  outboxRetryMs: 200,
  sweepMs: 50,
  timeQueryTimeoutMs: 1000,
};

export class EventLog {
  readonly events: EngineEvent[] = [];
  #waiters: { pred: (e: EngineEvent) => boolean; resolve: (e: EngineEvent) => void }[] = [];

  /** Feed it every event (pass `log.push` as the engine's onEvent). */
  readonly push = (e: EngineEvent): void => {
    this.events.push(e);
    for (const w of [...this.#waiters]) {
      if (w.pred(e)) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  };

  of<K extends EngineEvent["event"]>(kind: K): Extract<EngineEvent, { event: K }>[] {
    return this.events.filter((e) => e.event === kind) as Extract<EngineEvent, { event: K }>[];
  }

  /** Resolves with the first event (already seen or future) matching; rejects after `timeoutMs`. */
  waitFor<K extends EngineEvent["event"]>(
    kind: K,
    pred: (e: Extract<EngineEvent, { event: K }>) => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<Extract<EngineEvent, { event: K }>> {
    const match = (e: EngineEvent) => e.event === kind && pred(e as Extract<EngineEvent, { event: K }>);
    const seen = this.events.find(match);
    if (seen) return Promise.resolve(seen as Extract<EngineEvent, { event: K }>);
    return new Promise((resolve, reject) => {
      const w = {
        pred: match,
        resolve: (e: EngineEvent) => {
          clearTimeout(timer);
          resolve(e as Extract<EngineEvent, { event: K }>);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        reject(
          new Error(`timed out waiting for ${kind}; saw: ${JSON.stringify(this.events.map((e) => e.event))}`),
        );
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }
}

export interface RunningClient {
  home: HomeState;
  engine: ChatEngine;
  log: EventLog;
  stop(): Promise<void>;
}

export async function startClient(home: HomeState, opts: HomeEngineOptions = {}): Promise<RunningClient> {
  const log = new EventLog();
  const engine = await startEngineFromHome(home, { ...TEST_ENGINE_OPTIONS, ...opts, onEvent: log.push });
  return { home, engine, log, stop: () => engine.close() };
}

/** Polls `fn` until it returns true (bounded). */
export async function until(fn: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = "condition") {
  const end = performance.now() + timeoutMs;
  while (!(await fn())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** True when `needle` occurs in any of the files (missing files count as not containing it). */
export async function filesContain(paths: string[], needle: Uint8Array): Promise<boolean> {
  for (const p of paths) {
    let data: Uint8Array;
    try {
      data = await Deno.readFile(p);
    } catch {
      continue;
    }
    outer: for (let i = 0; i + needle.length <= data.length; i++) {
      for (let j = 0; j < needle.length; j++) if (data[i + j] !== needle[j]) continue outer;
      return true;
    }
  }
  return false;
}
