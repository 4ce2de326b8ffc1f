/**
 * Issue 11, finding 1: anyone, with no certificate, could switch off a user's listener for good by opening
 * raw TCP connections up to the process's file-descriptor limit (the accept loop died with EMFILE and never
 * accepted again). The victim runs as a real `chat --headless` process under a low `ulimit -n`; the test
 * floods it with raw connections from several loopback addresses, holds them, releases them, then checks
 * that the listener accepts again and that a message from another real process arrives.
 */
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { type HeadlessProc, listedKnock, spawnHeadless, until, withPair } from "./helpers/chat.ts";
import { makeKnock } from "../contract/mod.ts";

/** Opens up to `attempts` raw TCP connections (never starting TLS), `parallel` at a time, and holds them. */
async function flood(port: number, attempts: number, parallel = 64) {
  const held: net.Socket[] = [];
  let failed = 0;
  let closedByVictim = 0;
  let next = 0;
  const one = (i: number) =>
    new Promise<void>((resolve) => {
      // Several source addresses, as several attackers (or one with many) would use.
      const sock = net.connect({ host: "127.0.0.1", port, localAddress: `127.0.0.${2 + (i % 50)}` });
      let released = false;
      // A full backlog drops SYNs silently: such an attempt counts as failed instead of hanging for minutes.
      const timer = setTimeout(() => sock.destroy(), 2_000);
      sock.on("error", () => {});
      sock.once("connect", () => {
        clearTimeout(timer);
        held.push(sock);
        resolve();
      });
      sock.once("close", () => {
        clearTimeout(timer);
        if (!released && held.includes(sock)) closedByVictim++;
        if (!held.includes(sock)) {
          failed++;
          resolve();
        }
      });
      (sock as net.Socket & { release?: () => void }).release = () => {
        released = true;
        sock.destroy();
      };
    });
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < attempts) await one(next++);
  }));
  return {
    held,
    failed: () => failed,
    closedByVictim: () => closedByVictim,
    release: () => {
      for (const s of held) (s as net.Socket & { release: () => void }).release();
    },
  };
}

/** True when a TLS handshake with the listener completes after the knock (it answers, whatever it thinks of
 * us next). */
function answersTls(port: number, knock: Uint8Array): Promise<boolean> {
  return new Promise((resolve) => {
    const raw = net.connect({ host: "127.0.0.1", port });
    raw.on("error", () => {});
    raw.write(makeKnock(knock));
    const s = tls.connect({ socket: raw, rejectUnauthorized: false, minVersion: "TLSv1.3" });
    const timer = setTimeout(() => done(false), 2_000);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    s.once("secureConnect", () => done(true));
    s.once("error", () => done(false));
  });
}

/** The victim's open descriptors, counted by `ls` (Deno itself wants --allow-all to read /proc). */
function openFiles(pid: number): number | null {
  try {
    const out = new Deno.Command("ls", { args: [`/proc/${pid}/fd`], stderr: "null" }).outputSync();
    if (!out.success) return null;
    return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== "").length;
  } catch {
    return null;
  }
}

function bashAvailable(): boolean {
  try {
    return new Deno.Command("bash", { args: ["-c", "ulimit -n 256"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

// 256: the caps (MAX_CONNECTIONS 128) keep the listener under the limit. 96: below what the caps allow, so
// accept really fails with EMFILE and the listener must find that out and listen again.
for (const limit of [256, 96]) {
  Deno.test({
    name: `listener: raw connections up to the descriptor limit (ulimit -n ${limit}) do not switch it off`,
    ignore: !bashAvailable(),
    fn: async () => {
      await withPair(async (_pb, aliceHome, bobHome) => {
        const bob: HeadlessProc = spawnHeadless(bobHome.dir, { maxOpenFiles: limit });
        const alice: HeadlessProc = spawnHeadless(aliceHome.dir);
        try {
          const ready = await bob.waitEvent((e) => e.event === "ready", 30_000, "bob ready");
          await alice.waitEvent((e) => e.event === "ready", 30_000, "alice ready");
          const port = Number(String(ready.address).split(":").pop());
          const baseline = openFiles(bob.pid);

          const f = await flood(port, 1_000);
          // Held long enough for the victim to accept (or fail to accept) everything queued.
          await new Promise((r) => setTimeout(r, 1_500));
          const during = openFiles(bob.pid);
          assert.equal(bob.events.some((e) => e.event === "unparsed"), false);
          f.release();
          console.log(
            `ulimit ${limit}: ${f.held.length} connected, ${f.failed()} failed, ${f.closedByVictim()} closed by ` +
              `the victim; victim descriptors ${baseline} before, ${during} during the flood`,
          );
          // The listener drops what it cannot hold instead of keeping every socket.
          assert.ok(f.closedByVictim() > 0, "the victim closed connections it could not hold");

          // It accepts again (after a re-listen if the accept loop died), and real chat goes through.
          // Knocking as any enrolled peer would, with the secret the phonebook lists for bob.
          const knock = await listedKnock(aliceHome, "bob");
          assert.ok(knock, "the phonebook lists bob's knock secret to an enrolled user");
          await until(() => answersTls(port, knock), 30_000, "listener accepting again");
          await alice.cmd({ cmd: "send", to: "bob", text: "after the flood", ref: 7 });
          const got = await bob.waitEvent(
            (e) => e.event === "message" && e.text === "after the flood",
            30_000,
            "message after the flood",
          );
          assert.equal(got.from, "alice");
        } finally {
          await alice.quit();
          await bob.quit();
        }
      });
    },
  });
}
