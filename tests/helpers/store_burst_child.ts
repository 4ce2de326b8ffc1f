/**
 * The program tests/store_writer_thread_crash_test.ts kills: opens chat.db (argument 1) with its writer
 * thread, queues bursts of our messages (every fifth expiring, so its key is made and stored by the worker)
 * larger than a batch, and prints one JSON line {id, seq} for each message the store reported stored, until
 * it is killed. Ids start at argument 2 (a number), so every run writes new ones.
 */
import { ChatStore, type OutgoingMessage } from "../../client/store/store.ts";

const [path, firstArg] = Deno.args;
const BURST = 3000;
const store = new ChatStore(path, { writerThread: true, groupCommit: { maxBatch: 200 } });
await store.writerThreadOpened();
const enc = new TextEncoder();
let n = Number(firstArg);
for (;;) {
  const burst: Promise<void>[] = [];
  for (let i = 0; i < BURST; i++, n++) {
    const id = n.toString(16).padStart(32, "0");
    const m: OutgoingMessage = {
      id,
      peer: "bob",
      from: "alice",
      text: `text of ${id}`,
      sentAt: 1_000_000 + n,
      expiresAt: null,
      ttlMs: n % 5 === 0 ? 3_600_000 : null,
      ttlMode: n % 5 === 0 ? "send" : null,
      proof: null,
      state: "sending",
    };
    burst.push(
      store.queueOutgoing(m).then((seq) => {
        Deno.stdout.writeSync(
          enc.encode(JSON.stringify({ id, seq, threadBatches: store.threadBatches }) + "\n"),
        );
      }),
    );
  }
  await Promise.all(burst);
}
