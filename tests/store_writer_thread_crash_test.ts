/**
 * kill -9 of a program whose store writes its bursts on the writer thread (client/store/writer_thread.ts):
 * every message the store reported stored is in chat.db afterwards, whole (the expiring ones decrypt with
 * their key), once, in the order of their seqs, and a seq is never given twice across the restarts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ChatStore } from "../client/store/store.ts";

const KILLS = 4;
const CHILD = new URL("./helpers/store_burst_child.ts", import.meta.url).pathname;

/** Runs the burst program on `path` until it has reported `atLeast` stored messages, then a little more,
 * then SIGKILL. Returns what it reported. */
async function runAndKill(path: string, firstId: number, atLeast: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", CHILD, path, String(firstId)],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const reported: { id: string; seq: number; threadBatches: number }[] = [];
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let killed = false;
  const deadline = Date.now() + 60_000;
  try {
    while (!killed) {
      const r = await lines.read();
      if (r.done) break;
      buf += r.value;
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        reported.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
      if (reported.length >= atLeast || Date.now() > deadline) {
        await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * 80)));
        child.kill("SIGKILL");
        killed = true;
      }
    }
    // What it printed before it died counts too.
    for (;;) {
      const r = await lines.read();
      if (r.done) break;
      buf += r.value;
    }
    for (const line of buf.split("\n")) if (line.trim()) reported.push(JSON.parse(line));
  } finally {
    const status = await child.status;
    const err = await new Response(child.stderr).text();
    assert.ok(killed, `the burst program ended by itself (${status.code}): ${err}`);
  }
  return reported;
}

Deno.test("kill -9 with bursts at the store's writer thread, many times: nothing reported stored is lost, none is half or twice, seqs never reused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "securechat-writer-crash-" });
  const path = join(dir, "chat.db");
  try {
    // The schema exists before the first kill.
    new ChatStore(path).close();
    const acked = new Map<string, number>();
    let next = 1;
    let maxSeq = 0;
    for (let k = 0; k < KILLS; k++) {
      const reported = await runAndKill(path, next, 4000);
      next += 1_000_000;
      assert.ok(reported.length > 0, "the burst program reported nothing");
      assert.ok(reported.at(-1)!.threadBatches >= 5, "its bursts went to the writer thread");
      for (const r of reported) acked.set(r.id, r.seq);
      const store = new ChatStore(path);
      try {
        assert.equal(store.integrityCheck(), "ok");
        const history = store.history("bob");
        const byId = new Map(history.map((m) => [m.id, m]));
        assert.equal(byId.size, history.length, "a message stored twice");
        for (const [id, seq] of acked) {
          const m = byId.get(id);
          assert.ok(m, `reported stored, lost: ${id}`);
          assert.equal(m.text, `text of ${id}`, `a half or wrong row: ${id}`);
          assert.equal(m.seq, seq, `seq of ${id}`);
        }
        // History order is seq order, and seqs given after a restart are above every seq given before it.
        const seqs = history.map((m) => m.seq);
        for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1]);
        const runSeqs = reported.map((r) => r.seq);
        assert.ok(Math.min(...runSeqs) > maxSeq, `run ${k} gave a seq at or below ${maxSeq}`);
        maxSeq = Math.max(maxSeq, ...seqs);
      } finally {
        store.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
