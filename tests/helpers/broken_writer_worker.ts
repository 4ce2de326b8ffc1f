/// <reference lib="deno.worker" />
/** A store writer thread that cannot open chat.db (tests/store_writer_thread_test.ts): it answers the open
 * request with a failure, as writer_worker.ts does when SQLite refuses. */
import { postOutcome, type WriterRequest } from "../../client/store/writer_thread.ts";

self.onmessage = (e: MessageEvent<WriterRequest>) => {
  const m = e.data;
  if (m.t !== "open") return;
  postOutcome(m.mailbox, m.seq, { error: `cannot open ${m.path}: refused by this test's writer` });
  self.postMessage({ done: m.seq });
};
