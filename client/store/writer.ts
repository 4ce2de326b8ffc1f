/**
 * The write side of chat.db's messages: storing ours and received ones (with the keys of the expiring ones),
 * delivery state changes and read receipts, as batches inside a transaction the caller holds (the store's
 * one-off writes, and the group commit's batches).
 */
import type { DatabaseSync, SQLInputValue, StatementSync } from "node:sqlite";
import { newMessageKey, seal } from "./crypto.ts";
import type {
  IncomingItem,
  IncomingResult,
  OutgoingMessage,
  ReadReceipt,
  StateChange,
  StoredMessage,
} from "./types.ts";

type Row = Record<string, unknown>;

const utf8Encoder = new TextEncoder();

/** How long a statement waits for another connection's lock before it fails (SQLITE_BUSY): the store's
 * connection and its writer thread's take turns. */
export const BUSY_TIMEOUT_MS = 5000;

/** The highest seq ever given: the table's, or the one kept in meta (that message may have been deleted). */
const MAX_SEQ_SQL = "SELECT MAX(COALESCE((SELECT MAX(seq) FROM messages), 0), " +
  "COALESCE((SELECT CAST(v AS INTEGER) FROM meta WHERE k = 'seq.hw'), 0)) AS s";
const SET_MAX_SEQ_SQL = "INSERT OR REPLACE INTO meta (k, v) VALUES ('seq.hw', ?)";

/** What each state change sets, and the states it applies from (see StateChange). */
const STATE_RULES: Record<StateChange["state"], { set: string; from: string }> = {
  sent: { set: "state = 'sent'", from: "state IN ('sending','failed')" },
  delivered: { set: "state = 'delivered', unacked = 0", from: "state NOT IN ('delivered','read')" },
  failed: { set: "state = 'failed'", from: "state IN ('sending','sent')" },
};

const stateSql = (which: (rule: { set: string; from: string }) => string) =>
  Object.fromEntries(Object.entries(STATE_RULES).map(([k, r]) => [k, which(r)])) as Record<
    StateChange["state"],
    string
  >;

/** One change: ?1 the id, ?2 the peer. */
const STATE_CHANGE_SQL = stateSql((r) =>
  `UPDATE messages SET ${r.set} WHERE id = ?1 AND peer = ?2 AND direction = 'out' AND ${r.from}`
);

/** The same change for many ids of one peer at once (?1 the peer, ?2 a JSON array of ids): returns the ids
 * it changed. */
const STATE_CHANGE_MANY_SQL = stateSql((r) =>
  `UPDATE messages SET ${r.set} WHERE id IN (SELECT value FROM json_each(?2)) AND peer = ?1 AND ` +
  `direction = 'out' AND ${r.from} RETURNING id`
);

/** Which of the ids in the JSON array ?2 were received from peer ?1 before: held as a message, or
 * remembered after its deletion. (An id of one of our own messages to that peer is "known" too: the unique
 * index would refuse it.) */
const KNOWN_IDS_SQL = "SELECT value AS id FROM json_each(?2) WHERE " +
  "EXISTS (SELECT 1 FROM messages WHERE id = value AND peer = ?1) OR " +
  "EXISTS (SELECT 1 FROM received_ids WHERE peer = ?1 AND id = value)";

/** Rows per multi-row INSERT, largest first: a batch of n rows takes a few statements of these sizes (one
 * prepared statement each); 64 rows of 16 columns stay far below SQLite's limit on parameters. */
const INSERT_CHUNKS = [64, 16, 4, 1];

interface ChunkedSql {
  /** Values per row. */
  width: number;
  /** The statement for INSERT_CHUNKS[i] rows. */
  text: string[];
}

function chunked(head: string, width: number): ChunkedSql {
  const row = `(${new Array(width).fill("?").join(",")})`;
  return { width, text: INSERT_CHUNKS.map((n) => head + new Array(n).fill(row).join(",")) };
}

const MESSAGE_INSERT = chunked(
  "INSERT INTO messages (peer, id, sender, direction, encrypted, iv, body, sent_at, expires_at, ttl_ms, " +
    "ttl_mode, state, read_at, proof, seq, unacked) VALUES ",
  16,
);
const KEY_INSERT = chunked("INSERT INTO message_keys (peer, id, key) VALUES ", 3);

/** A connection's prepared statements, by their SQL: the batch paths run the same few thousands of times.
 * The store and its writer share one per connection. */
export class StatementCache {
  readonly #db: DatabaseSync;
  readonly #stmts = new Map<string, StatementSync>();

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  get(sql: string): StatementSync {
    let st = this.#stmts.get(sql);
    if (!st) {
      st = this.#db.prepare(sql);
      this.#stmts.set(sql, st);
    }
    return st;
  }
}

export class MessageWriter {
  readonly #stmts: StatementCache;

  constructor(stmts: StatementCache) {
    this.#stmts = stmts;
  }

  #stmt(sql: string): StatementSync {
    return this.#stmts.get(sql);
  }

  /** The highest seq ever given (0 for none). */
  highestSeq(): number {
    return Number((this.#stmt(MAX_SEQ_SQL).get() as Row).s);
  }

  /** Inserts messages (and the keys of the expiring ones) with multi-row INSERTs, and returns their seqs: a
   * statement call costs about as much as the row it writes, so a batch pays it once per chunk of rows. */
  #insertMany(ms: readonly Omit<StoredMessage, "seq">[]): number[] {
    const rows: SQLInputValue[] = [];
    const keys: SQLInputValue[] = [];
    const secrets: Uint8Array[] = [];
    const seqs: number[] = [];
    // A seq is never given twice, even when the message that had the highest was deleted since (expired):
    // the outbox's cursor takes a seq it has seen as already looked at, and would skip a new message that
    // got it again. The highest given is kept in meta, read and written in the transaction (which holds the
    // write lock), so it holds across the store's connections (its own and its writer thread's) and runs.
    if (ms.length === 0) return [];
    let last = this.highestSeq();
    try {
      for (const m of ms) {
        let iv: Uint8Array | null = null;
        let body: Uint8Array;
        const encrypted = m.ttlMs !== null;
        if (encrypted) {
          const key = newMessageKey();
          secrets.push(key);
          const s = seal(key, m.text, `${m.peer}\n${m.id}`);
          iv = s.iv;
          body = s.body;
          keys.push(m.peer, m.id, key);
        } else {
          body = utf8Encoder.encode(m.text);
        }
        const seq = ++last;
        seqs.push(seq);
        rows.push(
          m.peer,
          m.id,
          m.from,
          m.direction,
          encrypted ? 1 : 0,
          iv,
          body,
          m.sentAt,
          m.expiresAt,
          m.ttlMs,
          m.ttlMode,
          m.state,
          m.readAt,
          m.proof ? JSON.stringify(m.proof) : null,
          seq,
          m.direction === "out" && (m.state === "sending" || m.state === "sent" || m.state === "failed")
            ? 1
            : 0,
        );
      }
      this.#runChunked(KEY_INSERT, keys);
      this.#runChunked(MESSAGE_INSERT, rows);
    } finally {
      // The keys are in the statement's bindings until the next run; our copies go now.
      for (const k of secrets) k.fill(0);
    }
    this.#stmt(SET_MAX_SEQ_SQL).run(String(last));
    return seqs;
  }

  /** Runs a multi-row statement over `values` (rows of `sql.width` values each), in chunks of
   * INSERT_CHUNKS rows. */
  #runChunked(sql: ChunkedSql, values: SQLInputValue[]): void {
    let at = 0;
    let left = values.length / sql.width;
    for (let c = 0; c < INSERT_CHUNKS.length; c++) {
      const n = INSERT_CHUNKS[c];
      while (left >= n) {
        this.#stmt(sql.text[c]).run(...values.slice(at, at + n * sql.width));
        at += n * sql.width;
        left -= n;
      }
    }
  }

  applyOutgoing(ms: readonly OutgoingMessage[]): number[] {
    return this.#insertMany(ms.map((m) => ({ ...m, direction: "out", readAt: null })));
  }

  /** Stores what is new of `items`. A message counts as received while its row exists (the unique (id, peer)
   * index) and, once it is deleted, by its received_ids row (written by deleteMessages): so storing a message
   * writes one row, not two, and the batch's duplicates are found by one look-up per peer. An id that one of
   * our own messages to that peer already has cannot be stored either and counts as a duplicate. */
  applyIncoming(items: readonly IncomingItem[]): IncomingResult[] {
    const results: IncomingResult[] = new Array(items.length);
    const first = new Set<string>();
    const idsByPeer = new Map<string, string[]>();
    for (let i = 0; i < items.length; i++) {
      const { peer, id } = items[i].message;
      const key = `${peer}\n${id}`;
      if (first.has(key)) {
        results[i] = "duplicate";
        continue;
      }
      first.add(key);
      let ids = idsByPeer.get(peer);
      if (!ids) idsByPeer.set(peer, ids = []);
      ids.push(id);
    }
    const known = new Set<string>();
    for (const [peer, ids] of idsByPeer) {
      for (const r of this.#stmt(KNOWN_IDS_SQL).all(peer, JSON.stringify(ids)) as Row[]) {
        known.add(`${peer}\n${String(r.id)}`);
      }
    }
    const stored: Omit<StoredMessage, "seq">[] = [];
    for (let i = 0; i < items.length; i++) {
      if (results[i] !== undefined) continue;
      const { message: m, idOnly } = items[i];
      if (known.has(`${m.peer}\n${m.id}`)) {
        results[i] = "duplicate";
        continue;
      }
      results[i] = "stored";
      // Dead on arrival: only the id is kept, so a resend is refused.
      if (idOnly) this.#stmt("INSERT OR IGNORE INTO received_ids (peer, id) VALUES (?, ?)").run(m.peer, m.id);
      else stored.push({ ...m, direction: "in", readAt: null, state: "delivered" });
    }
    this.#insertMany(stored);
    return results;
  }

  /** Runs of changes to the same state for the same peer (a batch of receipts is one run) take one UPDATE
   * over the run's ids; the order of the runs is kept, so a change never overtakes one queued before it. */
  applyStates(changes: readonly StateChange[]): boolean[] {
    const out: boolean[] = new Array(changes.length);
    let i = 0;
    while (i < changes.length) {
      const { state, peer } = changes[i];
      let j = i + 1;
      while (j < changes.length && changes[j].state === state && changes[j].peer === peer) j++;
      if (j - i === 1) {
        out[i] = this.#stmt(STATE_CHANGE_SQL[state]).run(changes[i].id, peer).changes > 0;
      } else {
        const ids = changes.slice(i, j).map((c) => c.id);
        const changed = new Set(
          (this.#stmt(STATE_CHANGE_MANY_SQL[state]).all(peer, JSON.stringify(ids)) as Row[]).map((r) =>
            String(r.id)
          ),
        );
        // An id twice in the run changes once: its first occurrence.
        for (let k = i; k < j; k++) out[k] = changed.delete(changes[k].id);
      }
      i = j;
    }
    return out;
  }

  applyReads(reads: readonly ReadReceipt[]): boolean[] {
    const setRead = this.#stmt(
      "UPDATE messages SET state = 'read', unacked = 0, read_at = COALESCE(read_at, ?) WHERE peer = ? AND " +
        "id = ? AND direction = 'out' AND read_at IS NULL",
    );
    const earlier = this.#stmt(
      "UPDATE messages SET expires_at = MIN(COALESCE(expires_at, ?), ?) WHERE peer = ? AND id = ?",
    );
    return reads.map((r) => {
      const changed = setRead.run(r.readAt, r.peer, r.id).changes > 0;
      if (changed && r.expiresAt !== null) earlier.run(r.expiresAt, r.expiresAt, r.peer, r.id);
      return changed;
    });
  }
}

/** The writes the group commit queues, by the name a batch kind carries (its `op`): the store's own
 * connection and its writer thread (writer_worker.ts) apply a run of them through this one table. */
export const WRITER_OPS = {
  incoming: (w: MessageWriter, items: readonly IncomingItem[]) => w.applyIncoming(items),
  outgoing: (w: MessageWriter, items: readonly OutgoingMessage[]) => w.applyOutgoing(items),
  states: (w: MessageWriter, items: readonly StateChange[]) => w.applyStates(items),
  reads: (w: MessageWriter, items: readonly ReadReceipt[]) => w.applyReads(items),
};

export type WriterOp = keyof typeof WRITER_OPS;

/** Applies a run of operation `op` (a name that came from another thread, so it is checked). */
export function applyWriterOp(w: MessageWriter, op: string, items: unknown[]): unknown[] {
  if (!Object.hasOwn(WRITER_OPS, op)) throw new Error(`unknown store operation ${op}`);
  return (WRITER_OPS[op as WriterOp] as (w: MessageWriter, items: unknown[]) => unknown[])(w, items);
}
