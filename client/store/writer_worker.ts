/**
 * The store's writer thread (started by writer_thread.ts): its own connection to chat.db, set up like the
 * store's (secure_delete, WAL, the same busy timeout), applying the group commit's batches with the same
 * MessageWriter and transaction as the store's own connection would, and posting each outcome to the shared
 * mailbox. The keys of expiring messages are made and bound here, and wiped after their statement.
 */
/// <reference lib="deno.worker" />
import { DatabaseSync } from "node:sqlite";
import { applyRuns } from "./group_commit.ts";
import { applyWriterOp, BUSY_TIMEOUT_MS, MessageWriter, StatementCache } from "./writer.ts";
import { type Outcome, postOutcome, type ThreadRun, type WriterRequest } from "./writer_thread.ts";

let db: DatabaseSync | null = null;
let writer: MessageWriter | null = null;
let mailbox: SharedArrayBuffer | null = null;

self.onmessage = (e: MessageEvent<WriterRequest>) => {
  const m = e.data;
  let outcome: Outcome;
  if (m.t === "open") {
    mailbox = m.mailbox;
    try {
      db = new DatabaseSync(m.path);
      db.exec(`PRAGMA secure_delete=ON; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=${BUSY_TIMEOUT_MS};`);
      writer = new MessageWriter(new StatementCache(db));
      outcome = { results: [] };
    } catch (err) {
      db?.close();
      db = null;
      outcome = { error: `cannot open ${m.path}: ${(err as Error).message}` };
    }
    postOutcome(mailbox, m.seq, outcome);
    self.postMessage({ done: m.seq });
    return;
  }
  if (m.t === "close") {
    try {
      db?.close();
      outcome = { results: [] };
    } catch (err) {
      outcome = { error: (err as Error).message };
    }
    db = writer = null;
    postOutcome(mailbox!, m.seq, outcome);
    self.postMessage({ done: m.seq });
    return;
  }
  try {
    outcome = {
      results: applyRuns(
        db!,
        JSON.parse(m.runs) as ThreadRun[],
        m.durable,
        (run) => applyWriterOp(writer!, run.op, run.items),
        (run) => run.op,
      ),
    };
  } catch (err) {
    outcome = { error: (err as Error).message };
  }
  postOutcome(mailbox!, m.seq, outcome);
  self.postMessage({ done: m.seq });
};
