/// <reference lib="deno.worker" />
/** A store writer thread that opens, then fails at its first batch (tests/store_writer_thread_test.ts): an
 * error nothing in the worker catches, as a bug there would be. */
import { postOutcome, type WriterRequest } from "../../client/store/writer_thread.ts";

self.onmessage = (e: MessageEvent<WriterRequest>) => {
  const m = e.data;
  if (m.t === "open") {
    postOutcome(m.mailbox, m.seq, { results: [] });
    self.postMessage({ done: m.seq });
    return;
  }
  throw new Error("this writer thread breaks at its first batch");
};
