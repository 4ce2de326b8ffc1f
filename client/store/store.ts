/**
 * The chat engine's SQLite store (`chat.db` in the home folder): messages, their per-message keys, the ids
 * of received messages that were since deleted (at-most-once delivery outlives the message: while it exists
 * its own row is the record), and contacts with their pinned certificate fingerprints.
 *
 * Durability: WAL. Storing a message (ours, or one we are about to acknowledge) commits with synchronous=FULL,
 * so it is on disk, not only in the OS cache, before a receipt goes out; state changes (sent, delivered,
 * read) commit with synchronous=NORMAL: a power cut may lose one, which only causes a resend that the
 * receiver's id check absorbs. The engine's hot path goes through the group committer (`queue*` methods,
 * group_commit.ts): messages that arrive or are sent together share one transaction and one fsync, and each
 * caller learns of its write only once that transaction is committed. Deletion: with
 * secure_delete=ON SQLite overwrites freed content with zeros, and after deleting expired rows we checkpoint
 * the WAL and truncate it, so the text and its key are gone from both files.
 */
import { Buffer } from "node:buffer";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import type { DeliveryState, TtlMode } from "../engine_types.ts";
import { open } from "./crypto.ts";
import type { TimeProof } from "../../clock/types.ts";
import type { RevocationList } from "../revocation/rules.ts";
import { StoreError } from "./errors.ts";
import { type BatchKind, type GroupCommitOptions, GroupCommitter, LocalRunner } from "./group_commit.ts";

import type {
  ExpiringRow,
  IncomingItem,
  IncomingMessage,
  IncomingResult,
  OutgoingMessage,
  ReadReceipt,
  StateChange,
  StoredContact,
  StoredMessage,
} from "./types.ts";
import { applyWriterOp, BUSY_TIMEOUT_MS, MessageWriter, StatementCache, type WriterOp } from "./writer.ts";
import { WriterThread } from "./writer_thread.ts";

export { StoreError };
export type * from "./types.ts";

/** Messages in insertion order (seq is the rowid): new rows are appended and the state changes of recent
 * messages touch the same few pages, so a batch writes few pages to the WAL. (Version 1 was keyed on
 * (peer, id), which scattered every write over the whole table; it is migrated at open.) */
const MESSAGES_TABLE = (name: string) => `
CREATE TABLE IF NOT EXISTS ${name} (
  seq INTEGER PRIMARY KEY,
  peer TEXT NOT NULL,
  id TEXT NOT NULL,
  sender TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('in','out')),
  encrypted INTEGER NOT NULL,
  iv BLOB,
  body BLOB NOT NULL,
  sent_at INTEGER NOT NULL,
  expires_at INTEGER,
  ttl_ms INTEGER,
  ttl_mode TEXT,
  state TEXT NOT NULL,
  read_at INTEGER,
  proof TEXT,
  -- 1 while one of ours waits for its receipt (sending, sent, failed): the outbox index keys on this, not on
  -- state, so "sending" -> "sent" leaves the index alone.
  unacked INTEGER NOT NULL DEFAULT 0
);`;

const MESSAGE_COLUMNS =
  "seq, peer, id, sender, direction, encrypted, iv, body, sent_at, expires_at, ttl_ms, ttl_mode, state, " +
  "read_at, proof";
const UNACKED = "direction = 'out' AND state IN ('sending','sent','failed')";

const SCHEMA = `${MESSAGES_TABLE("messages")}
-- Ids are unique per peer; (id, peer) also finds a message by id alone.
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_id ON messages (id, peer);
CREATE INDEX IF NOT EXISTS messages_by_seq ON messages (peer, seq);
-- The outbox (unacknowledged messages of ours) without scanning the whole history at every flush.
CREATE INDEX IF NOT EXISTS messages_outbox ON messages (peer, seq) WHERE unacked = 1;
-- The sweeper reads only the messages with a lifetime.
CREATE INDEX IF NOT EXISTS messages_expiring ON messages (seq) WHERE ttl_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS message_keys (
  peer TEXT NOT NULL,
  id TEXT NOT NULL,
  key BLOB NOT NULL,
  PRIMARY KEY (peer, id)
) WITHOUT ROWID;
-- Ids of received messages since deleted (deleteMessages writes them; earlier versions wrote one for every
-- message received): with the messages' own (id, peer) index, what makes delivery at-most-once.
CREATE TABLE IF NOT EXISTS received_ids (
  peer TEXT NOT NULL,
  id TEXT NOT NULL,
  PRIMARY KEY (peer, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (
  name TEXT PRIMARY KEY,
  pinned_fp TEXT,
  pending_fp TEXT,
  verified INTEGER NOT NULL DEFAULT 0,
  default_ttl_ms INTEGER,
  pin_kind TEXT,
  peer_cert BLOB
);
CREATE TABLE IF NOT EXISTS pending_reads (
  peer TEXT NOT NULL,
  id TEXT NOT NULL,
  read_at INTEGER NOT NULL,
  PRIMARY KEY (peer, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
-- Peers the user blocked (client/blocklist.ts): refused at the hello, nothing of theirs stored.
CREATE TABLE IF NOT EXISTS blocked (name TEXT PRIMARY KEY, since_ms INTEGER NOT NULL) WITHOUT ROWID;
-- Peers the user talks to (wrote to, or accepted a message request of: client/requests.ts); any other peer's
-- messages are held as a bounded message request.
CREATE TABLE IF NOT EXISTS accepted (name TEXT PRIMARY KEY) WITHOUT ROWID;
-- Message requests over time (client/requests.ts): when a stranger's pending request began (it expires), and
-- until when a stranger whose request was declined or expired may not open a new one.
CREATE TABLE IF NOT EXISTS request_state (
  name TEXT PRIMARY KEY,
  since_ms INTEGER,
  cooldown_until_ms INTEGER
) WITHOUT ROWID;
`;

type Row = Record<string, unknown>;

/** How long the checkpoint after a deletion waits for another connection's read or write to end before it
 * gives up for now (it runs on the engine's thread: a long wait would freeze the chat). */
const CHECKPOINT_WAIT_MS = 100;

const utf8Decoder = new TextDecoder();

/** Up to this many outbox rows are read one by one (see outbox). */
const OUTBOX_FEW = 16;

/** The meta key under which the last verified revocation list is kept (see saveRevocationList). */
const META_CRL = "crl.v1";
/** Set once the contacts of a store from before message requests were accepted (see the constructor). */
const META_ACCEPTED = "accepted.v1";
const HEX_SERIAL = /^[0-9a-f]{1,64}$/;

/** Parses the stored list; anything malformed counts as no list (the engine then fails closed). */
function decodeRevocationList(text: string): RevocationList | null {
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof j !== "object" || j === null) return null;
  const o = j as Record<string, unknown>;
  if (!Array.isArray(o.serials) || !o.serials.every((x) => typeof x === "string" && HEX_SERIAL.test(x))) {
    return null;
  }
  if (!Number.isSafeInteger(o.thisUpdateMs)) return null;
  if (o.nextUpdateMs !== null && !Number.isSafeInteger(o.nextUpdateMs)) return null;
  if (o.crlNumber !== null && (typeof o.crlNumber !== "string" || !/^[0-9]{1,60}$/.test(o.crlNumber))) {
    return null;
  }
  let der: Uint8Array | undefined;
  if (o.der !== undefined) {
    if (typeof o.der !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(o.der)) return null;
    der = new Uint8Array(Buffer.from(o.der, "base64"));
  }
  return {
    serials: new Set(o.serials as string[]),
    crlNumber: o.crlNumber === null ? null : BigInt(o.crlNumber as string),
    thisUpdateMs: o.thisUpdateMs as number,
    nextUpdateMs: o.nextUpdateMs as number | null,
    ...(der ? { der } : {}),
  };
}

function num(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}

export interface ChatStoreOptions {
  /** Options of the group committer behind the `queue*` methods (tests count its transactions). */
  groupCommit?: GroupCommitOptions;
  /** Apply the group commit's batches on a thread of their own (writer_thread.ts), off the caller's event
   * loop. Default false; the engine turns it on. */
  writerThread?: boolean;
  /** Tests: a worker to be the writer thread instead of client/store/writer_worker.ts. */
  writerThreadWorker?: Worker;
}

export class ChatStore {
  readonly #db: DatabaseSync;
  /** The message writes on this connection (the one-off ones and the group commit's batches). */
  readonly #writer: MessageWriter;
  #closed = false;
  #walResidue = false;
  /** Messages were deleted since the last checkpoint that finished. */
  #deletedSinceCheckpoint = false;
  readonly #stmts: StatementCache;
  /** Contacts' default lifetimes read by ensureContactTtl. */
  readonly #contactTtl = new Map<string, number | null>();
  /** Shares one transaction (and one fsync) among the writes queued together. */
  readonly committer: GroupCommitter;
  readonly #thread: WriterThread | null = null;
  /** queueOutgoing calls not settled yet, and the highest seq one of them (or the store at open) reported:
   * while some are pending, a row above it was committed by the writer thread but its caller has not heard
   * of it yet (see #outboxKnown). */
  #outgoingPending = 0;
  #seqReported = 0;
  readonly #incomingKind: BatchKind<IncomingItem, IncomingResult>;
  readonly #outgoingKind: BatchKind<OutgoingMessage, number>;
  readonly #stateKind: BatchKind<StateChange, boolean>;
  readonly #readKind: BatchKind<ReadReceipt, boolean>;

  constructor(readonly path: string, opts: ChatStoreOptions = {}) {
    this.#db = new DatabaseSync(path);
    try {
      // secure_delete must be set on every connection; it is not stored in the file.
      this.#db.exec("PRAGMA secure_delete=ON; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
      this.#db.exec(`PRAGMA busy_timeout=${BUSY_TIMEOUT_MS};`);
      this.#migrateMessages();
      this.#db.exec(SCHEMA);
      this.#migrate();
      // Before message requests existed every contact was one we talked to: accept them all, once.
      this.#db.exec(
        `INSERT OR IGNORE INTO accepted (name) SELECT name FROM contacts
           WHERE NOT EXISTS (SELECT 1 FROM meta WHERE k = '${META_ACCEPTED}');
         INSERT OR IGNORE INTO meta (k, v) VALUES ('${META_ACCEPTED}', '1');`,
      );
    } catch (e) {
      this.#db.close();
      throw new StoreError("STORE_FAILED", `cannot open ${path}: ${(e as Error).message}`);
    }
    this.#stmts = new StatementCache(this.#db);
    this.#writer = new MessageWriter(this.#stmts);
    this.#seqReported = this.#writer.highestSeq();
    // A run that ended without closing (killed, power cut) may have deleted expired messages and died before
    // the checkpoint: their old pages would stay in the files until some later checkpoint. Not any more.
    this.checkpoint();
    try {
      Deno.chmodSync(path, 0o600);
    } catch {
      // Not fatal (e.g. a filesystem without modes); the home folder itself is 0700.
    }
    if (opts.writerThread) {
      this.#thread = new WriterThread(path, new LocalRunner(this.#db), opts.writerThreadWorker);
    }
    this.committer = new GroupCommitter(this.#db, {
      ...opts.groupCommit,
      ...(this.#thread ? { runner: this.#thread } : {}),
    });
    // `op` names the same apply for the writer thread (writer_worker.ts).
    const kind = <I, R>(name: string, op: WriterOp, durable: boolean): BatchKind<I, R> => ({
      name,
      op,
      durable,
      apply: (v) => applyWriterOp(this.#writer, op, v as unknown[]) as R[],
    });
    this.#incomingKind = kind("incoming messages", "incoming", true);
    this.#outgoingKind = kind("outgoing messages", "outgoing", true);
    this.#stateKind = kind("state changes", "states", false);
    this.#readKind = kind("read receipts", "reads", false);
  }

  /** Columns added after the first version: a chat.db written by an older version gets them, its pins keep
   * pin_kind NULL, which reads as "certificate" (they hashed the whole certificate). */
  #migrate(): void {
    const cols = new Set(
      (this.#db.prepare("PRAGMA table_info(contacts)").all() as Row[]).map((r) => String(r.name)),
    );
    if (!cols.has("pin_kind")) this.#db.exec("ALTER TABLE contacts ADD COLUMN pin_kind TEXT");
    if (!cols.has("peer_cert")) this.#db.exec("ALTER TABLE contacts ADD COLUMN peer_cert BLOB");
  }

  /** Rewrites a version 1 messages table (keyed on peer, id) into the current layout, in one transaction;
   * with secure_delete the old pages are zeroed, and the WAL is truncated after. */
  #migrateMessages(): void {
    const t = this.#db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'")
      .get() as Row | undefined;
    if (!t || !/WITHOUT\s+ROWID/i.test(String(t.sql))) return;
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      this.#db.exec(MESSAGES_TABLE("messages_v2"));
      this.#db.exec(
        `INSERT INTO messages_v2 (${MESSAGE_COLUMNS}, unacked) SELECT ${MESSAGE_COLUMNS}, ${UNACKED} FROM messages
          ORDER BY seq`,
      );
      this.#db.exec("DROP TABLE messages");
      this.#db.exec("ALTER TABLE messages_v2 RENAME TO messages");
      this.#db.exec("COMMIT");
    } catch (e) {
      this.#db.exec("ROLLBACK");
      throw e;
    }
    this.#db.exec("PRAGMA wal_checkpoint(TRUNCATE);");
  }

  #stmt(sql: string): StatementSync {
    return this.#stmts.get(sql);
  }

  /** Group commit batches applied by the writer thread so far (null without one). */
  get threadBatches(): number | null {
    return this.#thread?.threadBatches ?? null;
  }

  /** Resolves once the writer thread has opened chat.db (true), or is known not to (false; writes then
   * stay on this connection, and `writerThreadFailure` says why). Without a writer thread: false. */
  writerThreadOpened(): Promise<boolean> {
    return this.#thread?.opened() ?? Promise.resolve(false);
  }

  get writerThreadFailure(): string | null {
    return this.#thread?.failure ?? null;
  }

  /** Commits what is queued, checkpoints, then closes the connection. Returns false when messages deleted in
   * this run may still be in the files: the checkpoint was held off (another program has chat.db open), and
   * the next open finishes it. */
  close(): boolean {
    if (this.#closed) return true;
    this.committer.close();
    this.#thread?.close();
    this.#closed = true;
    const clean = this.checkpoint() || !this.#deletedSinceCheckpoint;
    this.#db.close();
    return clean;
  }

  /** A transaction that is on disk when it returns (synchronous=FULL for its commit). */
  #durableTx<T>(fn: () => T): T {
    this.#db.exec("PRAGMA synchronous=FULL");
    try {
      return this.#tx(fn);
    } finally {
      this.#db.exec("PRAGMA synchronous=NORMAL");
    }
  }

  #tx<T>(fn: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const r = fn();
      this.#db.exec("COMMIT");
      return r;
    } catch (e) {
      try {
        this.#db.exec("ROLLBACK");
      } catch {
        // the transaction may already be gone
      }
      if (e instanceof StoreError) throw e;
      throw new StoreError("STORE_FAILED", `store write failed: ${(e as Error).message}`);
    }
  }

  /** Stores a message we are sending (state "sending"). */
  addOutgoing(m: OutgoingMessage): void {
    this.addOutgoingBatch([m]);
  }

  /** Stores messages we are sending, in one transaction, on disk when it returns. */
  addOutgoingBatch(ms: readonly OutgoingMessage[]): void {
    this.#durableTx(() => this.#writer.applyOutgoing(ms));
  }

  /** Stores a received message unless its id was already received from that peer (even if it has since
   * expired). Returns "duplicate" without writing in that case. Committed before it returns. */
  addIncoming(m: IncomingMessage): IncomingResult {
    return this.addIncomingBatch([{ message: m }])[0];
  }

  /** addIncoming for many in one transaction (on disk when it returns). An id that occurs twice in the batch
   * is stored once: the second is a duplicate. */
  addIncomingBatch(items: readonly IncomingItem[]): IncomingResult[] {
    return this.#durableTx(() => this.#writer.applyIncoming(items));
  }

  /** Applies state changes in one transaction; true for each that changed the message. */
  setStates(changes: readonly StateChange[]): boolean[] {
    return this.#tx(() => this.#writer.applyStates(changes));
  }

  /** Whether message `id` from `peer` was received before (even if it has since expired or was deleted), or
   * would be refused as one: an id one of our own messages to that peer has. */
  hasReceived(peer: string, id: string): boolean {
    return this.#stmt(
      "SELECT 1 WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?2 AND peer = ?1) OR " +
        "EXISTS (SELECT 1 FROM received_ids WHERE peer = ?1 AND id = ?2)",
    ).get(peer, id) !== undefined;
  }

  /** Queues an incoming message for the next group commit; resolves once it is on disk. */
  queueIncoming(item: IncomingItem): Promise<IncomingResult> {
    return this.committer.enqueue(this.#incomingKind, item);
  }

  /** Queues one of our messages for the next group commit; resolves with its seq once it is on disk. */
  queueOutgoing(m: OutgoingMessage): Promise<number> {
    this.#outgoingPending++;
    return this.committer.enqueue(this.#outgoingKind, m).then((seq) => {
      this.#outgoingPending--;
      if (seq > this.#seqReported) this.#seqReported = seq;
      return seq;
    }, (e) => {
      this.#outgoingPending--;
      throw e;
    });
  }

  /** Queues a state change (after the writes queued before it); resolves with whether it changed anything. */
  queueState(change: StateChange): Promise<boolean> {
    return this.committer.enqueue(this.#stateKind, change);
  }

  /** Queues a read receipt; resolves with whether the message was ours and not yet read. */
  queueReadReceipt(r: ReadReceipt): Promise<boolean> {
    return this.committer.enqueue(this.#readKind, r);
  }

  setState(peer: string, id: string, state: DeliveryState): void {
    this.#stmt(
      `UPDATE messages SET state = ?1, unacked = (direction = 'out' AND ?1 IN ('sending','sent','failed'))
       WHERE peer = ?2 AND id = ?3`,
    ).run(state, peer, id);
  }

  /** Records the first display (or the read receipt) and, for "after read" messages, the deadline. Only the
   * first call sets read_at; a deadline only ever moves earlier. */
  markRead(peer: string, id: string, readAt: number, expiresAt: number | null): void {
    this.#tx(() => {
      this.#db.prepare("UPDATE messages SET read_at = COALESCE(read_at, ?) WHERE peer = ? AND id = ?").run(
        readAt,
        peer,
        id,
      );
      if (expiresAt !== null) {
        this.#db.prepare(
          "UPDATE messages SET expires_at = MIN(COALESCE(expires_at, ?), ?) WHERE peer = ? AND id = ?",
        ).run(expiresAt, expiresAt, peer, id);
      }
    });
  }

  #rowToMessage(r: Row): StoredMessage | null {
    const peer = String(r.peer);
    const id = String(r.id);
    let text: string;
    try {
      if (Number(r.encrypted) === 1) {
        const k = this.#stmt("SELECT key FROM message_keys WHERE peer = ? AND id = ?").get(peer, id) as
          | Row
          | undefined;
        if (!k) return null;
        text = open(
          k.key as Uint8Array,
          { iv: r.iv as Uint8Array, body: r.body as Uint8Array },
          `${peer}\n${id}`,
        );
      } else {
        text = utf8Decoder.decode(r.body as Uint8Array);
      }
    } catch {
      return null;
    }
    return {
      id,
      peer,
      from: String(r.sender),
      direction: r.direction === "in" ? "in" : "out",
      text,
      sentAt: Number(r.sent_at),
      expiresAt: num(r.expires_at),
      ttlMs: num(r.ttl_ms),
      ttlMode: r.ttl_mode === null ? null : (String(r.ttl_mode) as TtlMode),
      state: String(r.state) as DeliveryState,
      readAt: num(r.read_at),
      proof: r.proof === null ? null : (JSON.parse(String(r.proof)) as TimeProof),
      seq: Number(r.seq),
    };
  }

  get(peer: string, id: string): StoredMessage | null {
    const r = this.#stmt("SELECT * FROM messages WHERE peer = ? AND id = ?").get(peer, id) as
      | Row
      | undefined;
    return r ? this.#rowToMessage(r) : null;
  }

  /** All messages with this id (normally one; ids are unique per peer). */
  findById(id: string): StoredMessage[] {
    const rows = this.#db.prepare("SELECT * FROM messages WHERE id = ?").all(id) as Row[];
    return rows.map((r) => this.#rowToMessage(r)).filter((m): m is StoredMessage => m !== null);
  }

  history(peer: string): StoredMessage[] {
    const rows = this.#db.prepare("SELECT * FROM messages WHERE peer = ? ORDER BY seq").all(peer) as Row[];
    return rows.map((r) => this.#rowToMessage(r)).filter((m): m is StoredMessage => m !== null);
  }

  /** Outgoing messages not yet acknowledged, oldest first. Ids in `skip` (messages already written to a
   * connection) are left out before their text is decoded: a flush with thousands in flight reads only the
   * ones it will write. */
  outbox(
    peer?: string,
    skip?: { has(id: string): boolean },
    afterSeq = 0,
    known?: { get(seq: number): StoredMessage | undefined },
  ): StoredMessage[] {
    if (known && peer !== undefined) return this.#outboxKnown(peer, skip, afterSeq, known);
    // `afterSeq` (a cursor of the caller's: everything up to it was seen already) keeps a flush during a
    // long burst from rereading every message still waiting for its receipt. Bound, not spliced into the
    // SQL: each distinct text would be another prepared statement in the cache.
    const where = "FROM messages WHERE unacked = 1 AND seq > ?" +
      (peer === undefined ? "" : " AND peer = ?") +
      " ORDER BY seq";
    const args = (from: number): (number | string)[] => peer === undefined ? [from] : [from, peer];
    if (skip) {
      // The ids alone come from the outbox index; the rows to write are read whole, one by one when they
      // are few, else in one query from the first of them on.
      const keys = (this.#stmt(`SELECT peer, id, seq ${where}`).all(...args(afterSeq)) as Row[]).filter((k) =>
        !skip.has(String(k.id))
      );
      if (keys.length <= OUTBOX_FEW) {
        return keys.map((k) => this.get(String(k.peer), String(k.id))).filter((m): m is StoredMessage =>
          m !== null
        );
      }
      const rows = this.#stmt(`SELECT * ${where}`).all(...args((keys[0].seq as number) - 1)) as Row[];
      return rows.filter((r) => !skip.has(String(r.id))).map((r) => this.#rowToMessage(r))
        .filter((m): m is StoredMessage => m !== null);
    }
    const rows = this.#stmt(`SELECT * ${where}`).all(...args(afterSeq)) as Row[];
    return rows.map((r) => this.#rowToMessage(r)).filter((m): m is StoredMessage => m !== null);
  }

  /** The outbox of `peer` when the caller holds most of its messages (those it stored and has not written
   * yet): the store still says which messages wait (their seqs, from the outbox index alone, in one row),
   * and only the rows the caller lacks are read. */
  #outboxKnown(
    peer: string,
    skip: { has(id: string): boolean } | undefined,
    afterSeq: number,
    known: { get(seq: number): StoredMessage | undefined },
  ): StoredMessage[] {
    const r = this.#stmt(
      "SELECT json_group_array(seq) AS s FROM (SELECT seq FROM messages WHERE unacked = 1 AND peer = ? AND " +
        "seq > ? ORDER BY seq)",
    ).get(peer, afterSeq) as Row;
    let seqs = JSON.parse(String(r.s)) as number[];
    // Rows the writer thread committed whose callers have not heard of them yet are left to the flush their
    // callers start (the caller then holds them): read now they would be read back for nothing.
    if (this.#outgoingPending > 0) seqs = seqs.filter((q) => q <= this.#seqReported);
    const missing = seqs.filter((q) => known.get(q) === undefined);
    const read = new Map<number, StoredMessage>();
    if (missing.length) {
      const rows = this.#stmt("SELECT * FROM messages WHERE seq IN (SELECT value FROM json_each(?))").all(
        JSON.stringify(missing),
      ) as Row[];
      for (const row of rows) {
        if (skip?.has(String(row.id))) continue;
        const m = this.#rowToMessage(row);
        if (m) read.set(m.seq, m);
      }
    }
    const out: StoredMessage[] = [];
    for (const q of seqs) {
      const m = known.get(q) ?? read.get(q);
      if (m && !skip?.has(m.id)) out.push(m);
    }
    return out;
  }

  /** The peers with unacknowledged outgoing messages. */
  outboxPeers(): string[] {
    const rows = this.#stmt(
      "SELECT DISTINCT peer FROM messages WHERE unacked = 1",
    ).all() as Row[];
    return rows.map((r) => String(r.peer));
  }

  /** Every message with a lifetime (text not decrypted). */
  expiring(): ExpiringRow[] {
    const rows = this.#db.prepare(
      "SELECT peer, id, sent_at, expires_at, ttl_ms, ttl_mode FROM messages WHERE ttl_ms IS NOT NULL",
    ).all() as Row[];
    return rows.map((r) => ({
      peer: String(r.peer),
      id: String(r.id),
      sentAt: Number(r.sent_at),
      expiresAt: num(r.expires_at),
      ttlMs: Number(r.ttl_ms),
      ttlMode: String(r.ttl_mode) as TtlMode,
    }));
  }

  /** Deletes messages and their keys in one transaction, then checkpoints and truncates the WAL so no copy of
   * the rows remains in either file. Returns false when the WAL could not be truncated (see checkpoint): the
   * rows are deleted, but old copies of their pages are still in the files until a later checkpoint works. */
  deleteMessages(keys: { peer: string; id: string }[]): boolean {
    if (keys.length === 0) return true;
    this.#tx(() => {
      const dk = this.#db.prepare("DELETE FROM message_keys WHERE peer = ? AND id = ?");
      // A received message's id outlives it: a resend after its deletion is still refused.
      const remember = this.#db.prepare(
        "INSERT OR IGNORE INTO received_ids (peer, id) SELECT peer, id FROM messages WHERE id = ?2 AND " +
          "peer = ?1 AND direction = 'in'",
      );
      const dm = this.#db.prepare("DELETE FROM messages WHERE peer = ? AND id = ?");
      for (const k of keys) {
        dk.run(k.peer, k.id);
        remember.run(k.peer, k.id);
        dm.run(k.peer, k.id);
      }
    });
    this.#deletedSinceCheckpoint = true;
    return this.checkpoint();
  }

  /** Copies the WAL into the database file (where secure_delete has zeroed what was deleted) and truncates
   * it to nothing. Returns false, without throwing, when another connection kept it from completing within
   * CHECKPOINT_WAIT_MS: a program holding chat.db open in a read transaction (SQLite may not overwrite the
   * pages it is reading), or one writing. What the WAL holds then stays on disk, and `walResidue` is true,
   * until a later call succeeds. */
  checkpoint(): boolean {
    this.#db.exec(`PRAGMA busy_timeout=${CHECKPOINT_WAIT_MS}`);
    try {
      // busy = 1: SQLITE_BUSY, the checkpoint did not complete (the row says so; it does not throw).
      const r = (this.#stmt("PRAGMA wal_checkpoint(TRUNCATE)").all() as Row[])[0];
      this.#walResidue = Number(r.busy) !== 0;
      if (!this.#walResidue) this.#deletedSinceCheckpoint = false;
    } catch {
      this.#walResidue = true;
    } finally {
      this.#db.exec(`PRAGMA busy_timeout=${BUSY_TIMEOUT_MS}`);
    }
    return !this.#walResidue;
  }

  /** Whether the last checkpoint did not complete (what was deleted before it may still be in the files). */
  get walResidue(): boolean {
    return this.#walResidue;
  }

  integrityCheck(): string {
    const r = this.#db.prepare("PRAGMA integrity_check").get() as Row;
    return String(Object.values(r)[0]);
  }

  contact(name: string): StoredContact | null {
    const r = this.#stmt("SELECT * FROM contacts WHERE name = ?").get(name) as Row | undefined;
    return r
      ? {
        name: String(r.name),
        pinnedFingerprint: r.pinned_fp === null ? null : String(r.pinned_fp),
        pinKind: r.pinned_fp === null ? null : r.pin_kind === "key" ? "key" : "certificate",
        pendingFingerprint: r.pending_fp === null ? null : String(r.pending_fp),
        certificateDer: r.peer_cert instanceof Uint8Array ? new Uint8Array(r.peer_cert) : null,
        verified: Number(r.verified) === 1,
        defaultTtlMs: num(r.default_ttl_ms),
      }
      : null;
  }

  contacts(): StoredContact[] {
    const rows = this.#db.prepare("SELECT name FROM contacts ORDER BY name").all() as Row[];
    return rows.map((r) => this.contact(String(r.name))).filter((c): c is StoredContact => c !== null);
  }

  ensureContact(name: string): StoredContact {
    // Read first: every send asks, and a write (even one that inserts nothing) takes the write lock.
    const known = this.contact(name);
    if (known) return known;
    this.#db.prepare("INSERT OR IGNORE INTO contacts (name) VALUES (?)").run(name);
    return this.contact(name)!;
  }

  /** The contact's default lifetime (null: none), the contact added when new. Every send asks, so it reads
   * that one column, not the whole row with its certificate. */
  ensureContactTtl(name: string): number | null {
    // Remembered per connection: only setDefaultTtl changes it (contacts are never deleted), and a statement
    // outside a transaction costs microseconds of locking (the WAL's shared memory) even for one indexed row.
    const cached = this.#contactTtl.get(name);
    if (cached !== undefined) return cached;
    const r = this.#stmt("SELECT default_ttl_ms AS t FROM contacts WHERE name = ?").get(name) as
      | Row
      | undefined;
    if (!r) this.#stmt("INSERT OR IGNORE INTO contacts (name) VALUES (?)").run(name);
    const ttl = r ? num(r.t) : null;
    this.#contactTtl.set(name, ttl);
    return ttl;
  }

  /** Pins a key fingerprint (first use, or an accepted change): clears any pending change and the verified
   * mark when the key changed. */
  pin(name: string, fingerprint: string): void {
    this.ensureContact(name);
    this.#db.prepare(
      `UPDATE contacts SET verified = CASE WHEN pinned_fp = ? THEN verified ELSE 0 END, pinned_fp = ?,
       pin_kind = 'key', pending_fp = NULL WHERE name = ?`,
    ).run(fingerprint, fingerprint, name);
  }

  /** Replaces an old certificate pin by the key fingerprint of that same certificate: the same identity, so
   * the verified mark stays. Does nothing unless the pin is still the certificate fingerprint given. */
  convertPin(name: string, certificateFingerprint: string, keyFingerprint: string): void {
    this.#db.prepare(
      `UPDATE contacts SET pinned_fp = ?, pin_kind = 'key'
       WHERE name = ? AND pinned_fp = ? AND (pin_kind IS NULL OR pin_kind <> 'key')`,
    ).run(keyFingerprint, name, certificateFingerprint);
  }

  /** Keeps the certificate a peer last proved (a renewal of the same key replaces it silently). */
  saveCertificate(name: string, der: Uint8Array): void {
    this.ensureContact(name);
    this.#db.prepare("UPDATE contacts SET peer_cert = ? WHERE name = ?").run(der, name);
  }

  setPending(name: string, fingerprint: string | null): void {
    this.ensureContact(name);
    this.#db.prepare("UPDATE contacts SET pending_fp = ? WHERE name = ?").run(fingerprint, name);
  }

  setVerified(name: string, verified: boolean): void {
    this.ensureContact(name);
    this.#db.prepare("UPDATE contacts SET verified = ? WHERE name = ?").run(verified ? 1 : 0, name);
  }

  setDefaultTtl(name: string, ttlMs: number | null): void {
    this.ensureContact(name);
    this.#db.prepare("UPDATE contacts SET default_ttl_ms = ? WHERE name = ?").run(ttlMs, name);
    this.#contactTtl.set(name, ttlMs);
  }

  /** A read receipt to send when the peer is connected (kept across restarts). */
  addPendingRead(peer: string, id: string, readAt: number): void {
    this.#db.prepare("INSERT OR IGNORE INTO pending_reads (peer, id, read_at) VALUES (?, ?, ?)").run(
      peer,
      id,
      readAt,
    );
  }

  pendingReads(peer?: string): { peer: string; id: string; readAt: number }[] {
    const stmt = this.#stmt(
      "SELECT peer, id, read_at FROM pending_reads" + (peer === undefined ? "" : " WHERE peer = ?"),
    );
    const rows = (peer === undefined ? stmt.all() : stmt.all(peer)) as Row[];
    return rows.map((r) => ({ peer: String(r.peer), id: String(r.id), readAt: Number(r.read_at) }));
  }

  removePendingRead(peer: string, id: string): void {
    this.removePendingReads(peer, [id]);
  }

  /** Forgets read receipts once written to the peer's connection (one transaction). */
  removePendingReads(peer: string, ids: readonly string[]): void {
    if (ids.length === 0) return;
    this.#tx(() => {
      const del = this.#stmt("DELETE FROM pending_reads WHERE peer = ? AND id = ?");
      for (const id of ids) del.run(peer, id);
    });
  }

  unreadCount(peer: string): number {
    const r = this.#db.prepare(
      "SELECT COUNT(*) AS n FROM messages WHERE peer = ? AND direction = 'in' AND read_at IS NULL",
    ).get(peer) as Row;
    return Number(r.n);
  }

  /** Bytes of the stored bodies of messages from `peer` not read yet (the inbox quota, peer_quota.ts). */
  unreadBytes(peer: string): number {
    const r = this.#stmt(
      "SELECT COALESCE(SUM(length(body)), 0) AS n FROM messages WHERE peer = ? AND direction = 'in' AND " +
        "read_at IS NULL",
    ).get(peer) as Row;
    return Number(r.n);
  }

  /** Peers we talk to (client/requests.ts). */
  acceptedNames(): string[] {
    return (this.#stmt("SELECT name FROM accepted").all() as Row[]).map((r) => String(r.name));
  }

  setAccepted(name: string): void {
    this.#stmt("INSERT OR IGNORE INTO accepted (name) VALUES (?)").run(name);
  }

  /** Incoming messages stored per peer not accepted (the pending message requests). */
  requestCounts(): Map<string, number> {
    const rows = this.#stmt(
      `SELECT peer, COUNT(*) AS n FROM messages WHERE direction = 'in' AND
         peer NOT IN (SELECT name FROM accepted) GROUP BY peer`,
    ).all() as Row[];
    return new Map(rows.map((r) => [String(r.peer), Number(r.n)]));
  }

  /** What client/requests.ts keeps of each stranger's request: its start and a cooldown after it ended. */
  requestStates(): { name: string; sinceMs: number | null; cooldownUntilMs: number | null }[] {
    const num = (v: unknown) => v === null || v === undefined ? null : Number(v);
    return (this.#stmt("SELECT name, since_ms, cooldown_until_ms FROM request_state").all() as Row[]).map((
      r,
    ) => ({ name: String(r.name), sinceMs: num(r.since_ms), cooldownUntilMs: num(r.cooldown_until_ms) }));
  }

  /** Sets (both null: forgets) a stranger's request state. */
  setRequestState(name: string, sinceMs: number | null, cooldownUntilMs: number | null): void {
    if (sinceMs === null && cooldownUntilMs === null) {
      this.#stmt("DELETE FROM request_state WHERE name = ?").run(name);
    } else {
      this.#stmt("INSERT OR REPLACE INTO request_state (name, since_ms, cooldown_until_ms) VALUES (?, ?, ?)")
        .run(name, sinceMs, cooldownUntilMs);
    }
  }

  /** The ids of the messages received from `peer` (to delete a declined request). */
  incomingIds(peer: string): string[] {
    return (this.#stmt("SELECT id FROM messages WHERE peer = ? AND direction = 'in'").all(peer) as Row[]).map(
      (r) => String(r.id),
    );
  }

  /** Names the user blocked, sorted. */
  blockedNames(): string[] {
    const rows = this.#stmt("SELECT name FROM blocked ORDER BY name").all() as Row[];
    return rows.map((r) => String(r.name));
  }

  /** Blocks or unblocks `name` (on disk when it returns: a restart must not let a blocked peer back in). */
  setBlocked(name: string, blocked: boolean, nowMs = Date.now()): void {
    this.#durableTx(() => {
      if (blocked) {
        this.#stmt("INSERT OR IGNORE INTO blocked (name, since_ms) VALUES (?, ?)").run(name, nowMs);
      } else this.#stmt("DELETE FROM blocked WHERE name = ?").run(name);
    });
  }

  /** The last verified revocation list, or null when none was ever stored (or the stored one is unreadable). */
  revocationList(): RevocationList | null {
    const r = this.#db.prepare("SELECT v FROM meta WHERE k = ?").get(META_CRL) as Row | undefined;
    return r ? decodeRevocationList(String(r.v)) : null;
  }

  /** Replaces the stored revocation list (on disk when it returns: a restart must not forget a revocation).
   * The signed DER is kept with the contents: the engine verifies it again at every start and uses only what
   * verifies (the contents beside it are for reading; a list stored without DER is not used again). */
  saveRevocationList(crl: RevocationList): void {
    const text = JSON.stringify({
      serials: [...crl.serials].sort(),
      crlNumber: crl.crlNumber === null ? null : crl.crlNumber.toString(),
      thisUpdateMs: crl.thisUpdateMs,
      nextUpdateMs: crl.nextUpdateMs,
      ...(crl.der ? { der: Buffer.from(crl.der).toString("base64") } : {}),
    });
    this.#durableTx(() => {
      this.#db.prepare("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)").run(META_CRL, text);
    });
  }
}
