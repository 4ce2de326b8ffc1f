/**
 * The receiving side of the chat: checks a message frame from an open session (sender and recipient, time
 * proof, deadline), hands it to the store's group committer, and sends its delivery receipt (`ack`) only once
 * the message (or, dead on arrival, its id) is on disk. A duplicate is acknowledged again and stored nothing.
 *
 * Speed without losing a message: `receive` returns before the commit, so the session keeps decoding and the
 * messages of one socket read share one transaction (one fsync). Receipts go out in arrival order, several in
 * one write, and to a peer that takes them (CAP_ACKS) a run of them as one `acks` frame. Memory stays bounded under a flood: once `maxPending` messages of a session wait for their
 * commit or their receipt (or their texts add up to `maxPendingChars`), `receive` waits too, and the session
 * stops reading (TCP then slows the sender).
 * When a commit fails, the session is failed with STORE_FAILED and the messages not acknowledged yet stay
 * with the sender, which tries again.
 */
import { codeOf } from "../coded_error.ts";
import type { TimeProof, TrustedTime } from "../clock/types.ts";
import { verifyTimeProof } from "../clock/mod.ts";
import type { EngineEvent } from "./engine_types.ts";
import { effectiveDeadline, isVisible, provedSentAt, receiverDeadline } from "./expiry.ts";
import { ProtocolError, REFUSED_MESSAGE } from "./protocol/errors.ts";
import type { AckFrame, AcksFrame, MsgFrame, RefuseFrame } from "./protocol/frames.ts";
import { CAP_ACKS, MAX_ACK_IDS } from "./protocol/constants.ts";
import { timeProofData } from "./protocol/binding.ts";
import type { IncomingItem, IncomingMessage, IncomingResult, StoredMessage } from "./store/store.ts";
import type { PeerQuota } from "./peer_quota.ts";
import type { MessageRequests } from "./requests.ts";

/** Messages of one session received and not yet acknowledged (committing, or their receipt not yet handed
 * to the socket) before `receive` starts to wait: enough that a burst of small messages shares one fsync... */
export const DEFAULT_MAX_PENDING = 1024;
/** ...and the bound on their text (UTF-16 code units, about bytes), so big messages cannot pile up memory. */
export const DEFAULT_MAX_PENDING_CHARS = 1 << 20;
/** How long a limit's refusal waits for the receipts of the messages before it (their commits; a peer that
 * reads nothing holds them in our socket buffer) before the session ends anyway. */
export const REFUSAL_RECEIPTS_WAIT_MS = 5000;

/** What the inbox answers a message with. */
export type Receipt = AckFrame | AcksFrame | RefuseFrame;

/** What the inbox needs of a peer session (PeerSession satisfies it). */
export interface InboxSession {
  readonly state: string;
  readonly peer: { readonly name: string } | null;
  /** What the peer's hello listed (CAP_ACKS: it takes `acks` frames); absent or empty: one `ack` each. */
  readonly peerCaps?: ReadonlySet<string>;
  sendBatch(frames: readonly Receipt[]): Promise<void>;
  fail(code: string, message: string): void;
}

export interface InboxDeps {
  /** Our name: messages must be addressed to it. */
  name: string;
  /** Roughtime public keys whose time proofs we accept. */
  timeKeys: Uint8Array[];
  maxUnreadMs: number;
  clock: {
    now(): TrustedTime | null;
    deadlinePassed(deadlineMs: number): boolean | null;
  };
  /** The group committer's entry for received messages (ChatStore.queueIncoming). */
  store: { queueIncoming(item: IncomingItem): Promise<IncomingResult> };
  /** Whether the message `id` of `peer` was received before (ChatStore.hasReceived): it then takes no room in
   * the quota or a request. */
  received?(peer: string, id: string): boolean;
  emit(e: EngineEvent): void;
  /** A newly stored message that may be shown now. */
  announce(m: Omit<StoredMessage, "seq">): void;
  /** A newly stored expiring message that may not be shown yet (time unknown): the sweeper shows it later. */
  hide(peer: string, id: string): void;
  /** Caps a stored expiring message's life at `afterMs` from now on the monotonic clock (the sweeper). */
  cap?(peer: string, id: string, afterMs: number): void;
  maxPending?: number;
  maxPendingChars?: number;
  /** Peers the user blocked: a message from one is refused (BLOCKED), nothing stored. */
  isBlocked?(peer: string): boolean;
  /** Per-peer unread bytes and message rate (peer_quota.ts): a refused message ends the session. */
  quota?: PeerQuota;
  /** A stranger's messages are a bounded message request (requests.ts). */
  requests?: MessageRequests;
}

interface Entry {
  id: string;
  chars: number;
  status: "committing" | "committed" | "failed";
  error: Error | null;
  /** Not stored: answered with this refusal instead of an ack, in its place in the receipt order. */
  refuse?: RefuseFrame["code"];
}

interface SessionQueue {
  /** In arrival order; the head's receipt goes out first. */
  entries: Entry[];
  /** Sum of the entries' text lengths. */
  chars: number;
  writing: boolean;
  scheduled: boolean;
  waiter: (() => void) | null;
  /** Called once no message is left waiting (every receipt handed to the socket, or dropped). */
  idle: (() => void)[];
}

const utf8 = new TextEncoder();

/** UTF-8 bytes of a string without allocating for plain ASCII. */
function utf8Length(text: string): number {
  // deno-lint-ignore no-control-regex
  return /^[\x00-\x7f]*$/.test(text) ? text.length : utf8.encode(text).length;
}

export class Inbox {
  readonly #deps: InboxDeps;
  readonly #maxPending: number;
  readonly #maxPendingChars: number;
  readonly #queues = new WeakMap<InboxSession, SessionQueue>();
  /** Refusals already said in the log (a sender retries every few seconds). */
  readonly #refusedSaid = new Set<string>();
  /** Messages that arrived already dead, per peer, said in one log line per committed batch. */
  readonly #deadOnArrival = new Map<string, number>();

  constructor(deps: InboxDeps) {
    const max = deps.maxPending ?? DEFAULT_MAX_PENDING;
    const chars = deps.maxPendingChars ?? DEFAULT_MAX_PENDING_CHARS;
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError("maxPending must be a positive integer");
    if (!Number.isSafeInteger(chars) || chars < 1) {
      throw new RangeError("maxPendingChars must be a positive integer");
    }
    this.#deps = deps;
    this.#maxPending = max;
    this.#maxPendingChars = chars;
  }

  /** Messages of `s` received and not yet acknowledged. */
  pending(s: InboxSession): number {
    return this.#queues.get(s)?.entries.length ?? 0;
  }

  /** Takes a message frame of an open session. Throws ProtocolError (nothing stored, no receipt) when the
   * frame is refused by its checks; a refusal by the limits (quota, rate, requests) rejects with it once the
   * receipts of the messages before it are written. Resolves at once while the session's waiting messages are
   * under maxPending (and their text under maxPendingChars), else once enough of them are acknowledged (or
   * the session closed). */
  receive(s: InboxSession, f: MsgFrame): Promise<void> {
    return this.take(s, f) ?? Promise.resolve();
  }

  /** receive() for the session's pump: nothing (no promise to allocate and await) when the session may go
   * on reading at once, else the promise that resolves when it may. Throws like receive(). */
  take(s: InboxSession, f: MsgFrame): Promise<void> | undefined {
    const item = this.#check(s, f);
    const peer = item.message.peer;
    // After the checks (a refused frame costs no quota), before the store: over the quota nothing is stored.
    const quota = this.#deps.quota;
    const requests = this.#deps.requests;
    const q = this.#queue(s);
    // A message we already hold (its receipt was lost) takes no room: it is acknowledged again and never
    // refused for want of room. Counting it as new made a sender whose receipts were lost resend its whole
    // outbox into a full quota at every retry, be refused before the duplicates' receipts went out, and never
    // get through (the issue-11 "delivers once there is room" hang). The rate still applies. Whether we hold
    // it is asked only when a limit would refuse it (one look-up in chat.db per message was a tenth of the
    // receiver's time in `bench chat`); a duplicate that fits is admitted, and released when the store finds
    // it is one.
    let known: boolean | null = null;
    const isKnown = () => known ??= this.#deps.received?.(peer, f.id) === true;
    let bytes = item.idOnly ? 0 : utf8Length(f.text);
    try {
      quota?.admit(peer, bytes);
    } catch (e) {
      if (bytes === 0 || codeOf(e) !== "QUOTA_EXCEEDED" || !isKnown()) return this.#refuseAfterReceipts(q, e);
      bytes = 0;
      try {
        quota?.admit(peer, 0);
      } catch (e2) {
        return this.#refuseAfterReceipts(q, e2);
      }
    }
    // A known message is no new request either.
    let counted = requests;
    try {
      counted?.admit(peer);
    } catch (e) {
      if (!isKnown()) {
        quota?.settle(peer, bytes, false);
        return this.#refuseAfterReceipts(q, e);
      }
      counted = undefined;
    }
    // No keeping a message by blocking time: without verified time we could not delete an expiring message
    // at its deadline (its text and key would sit in chat.db past it), so it is not taken; the sender keeps
    // it queued, sends it again later, and its own copy dies on time if it never gets through.
    if (item.message.ttlMs !== null && !item.idOnly && this.#deps.clock.now() === null && !isKnown()) {
      // Nothing is stored: what was admitted above is given back at once.
      quota?.settle(peer, bytes, false);
      counted?.settle(peer, f.id, false);
      q.entries.push({ id: f.id, chars: 0, status: "committed", error: null, refuse: "TIME_UNVERIFIED" });
      const key = `${peer}|${f.id}`;
      if (!this.#refusedSaid.has(key)) {
        if (this.#refusedSaid.size > 1000) this.#refusedSaid.clear();
        this.#refusedSaid.add(key);
        this.#deps.emit({
          event: "log",
          level: "warn",
          text: `refused an expiring message from ${peer}: our time is not verified (it stays with ` +
            `the sender, who sends it again later)`,
        });
      }
      this.#schedule(s, q);
      return undefined;
    }
    const entry: Entry = { id: f.id, chars: f.text.length, status: "committing", error: null };
    q.entries.push(entry);
    q.chars += entry.chars;
    const cap = item.capMs;
    this.#deps.store.queueIncoming(item).then(
      (result) => {
        // A request ended (declined, blocked, expired) while this was committing deletes it as it lands.
        const kept = counted ? counted.settle(peer, f.id, result === "stored") : result === "stored";
        quota?.settle(peer, bytes, kept);
        entry.status = "committed";
        if (kept && !item.idOnly && cap !== null) this.#deps.cap?.(peer, f.id, cap);
        if (kept && !item.idOnly) this.#reveal(item.message);
        if (kept && item.idOnly) this.#noteDeadOnArrival(peer);
        this.#schedule(s, q);
      },
      (e: Error) => {
        quota?.settle(peer, bytes, false);
        counted?.settle(peer, f.id, false);
        entry.status = "failed";
        entry.error = e;
        this.#schedule(s, q);
      },
    );
    if (!this.#full(q)) return undefined;
    return new Promise<void>((resolve) => q.waiter = resolve);
  }

  /** A refusal (quota, rate, request limit) ends the session, but only once every message taken before it is
   * committed and its receipt written: the sender then knows those are delivered and resends only the rest.
   * Ending at once dropped those receipts, so the sender resent them too, and a full quota refused it again
   * before their receipts could go out. Rejects with `e` (the session turns it into the error frame). */
  #refuseAfterReceipts(q: SessionQueue, e: unknown): Promise<void> {
    const fail = () => Promise.reject(e);
    if (q.entries.length === 0) return fail();
    return new Promise<void>((resolve) => {
      // A peer that does not read its receipts (they wait for drain) is refused anyway after a while.
      const timer = setTimeout(done, REFUSAL_RECEIPTS_WAIT_MS);
      function done() {
        clearTimeout(timer);
        const i = q.idle.indexOf(done);
        if (i >= 0) q.idle.splice(i, 1);
        resolve();
      }
      q.idle.push(done);
    }).then(fail);
  }

  #queue(s: InboxSession): SessionQueue {
    let q = this.#queues.get(s);
    if (!q) {
      q = { entries: [], chars: 0, writing: false, scheduled: false, waiter: null, idle: [] };
      this.#queues.set(s, q);
    }
    return q;
  }

  /** The checks of a message frame, and what to store: the proof-bounded send time and deadline. */
  #check(s: InboxSession, f: MsgFrame): IncomingItem & { capMs: number | null } {
    const d = this.#deps;
    const peer = s.peer?.name;
    if (peer === undefined) throw new ProtocolError("UNEXPECTED_FRAME", "message before the peer is known");
    if (f.from !== peer) {
      throw new ProtocolError("SENDER_MISMATCH", `message from "${f.from}" over ${peer}'s session`);
    }
    if (f.to !== d.name) throw new ProtocolError("BAD_FIELD", `message addressed to "${f.to}"`);
    // A session open when the user blocked its peer is ended at once; this covers frames already read.
    if (d.isBlocked?.(peer)) throw new ProtocolError("REFUSED", REFUSED_MESSAGE);
    let sentAt = f.sentAt;
    let expiresAt: number | null = null;
    // The monotonic cap from arrival: the lifetime plus the proof's whole uncertainty (for "after read", the
    // unread bound on top), so losing or moving trusted time later cannot stretch the message's life.
    let capMs: number | null = null;
    if (f.ttlMs !== undefined) {
      let proved: { midpointMs: number; radiusMs: number };
      try {
        proved = verifyTimeProof(f.proof as TimeProof, timeProofData(f), d.timeKeys);
      } catch (e) {
        throw new ProtocolError("BAD_TIME_PROOF", `time proof refused: ${(e as Error).message}`);
      }
      sentAt = provedSentAt(f.sentAt, proved.midpointMs, proved.radiusMs);
      capMs = (f.ttlMode === "read" ? d.maxUnreadMs + f.ttlMs : f.ttlMs) + 2 * Math.max(0, proved.radiusMs);
      if (f.ttlMode !== "read") {
        expiresAt = receiverDeadline({
          claimedSentAt: f.sentAt,
          proofMidpointMs: proved.midpointMs,
          proofRadiusMs: proved.radiusMs,
          ttlMs: f.ttlMs,
        });
      }
    }
    const message: IncomingMessage = {
      id: f.id,
      peer,
      from: peer,
      text: f.text,
      sentAt,
      expiresAt,
      ttlMs: f.ttlMs ?? null,
      ttlMode: f.ttlMs !== undefined ? (f.ttlMode ?? "send") : null,
      proof: f.proof ?? null,
    };
    // Already dead on arrival (it waited too long in the sender's outbox): keep only its id, so its text
    // never reaches the disk. For an "after read" message the deadline is its unread bound, from the
    // proof-bounded send time.
    const deadline = effectiveDeadline(message, d.maxUnreadMs);
    const idOnly = deadline !== null && d.clock.deadlinePassed(deadline) === true;
    return { message, idOnly, capMs };
  }

  /** Says that a message arrived after its lifetime: the receiver would otherwise never know one came (the
   * sender sees it delivered). The messages of one committed batch settle one after another in the same
   * turn, so they make one line per peer. */
  #noteDeadOnArrival(peer: string): void {
    const first = this.#deadOnArrival.size === 0;
    this.#deadOnArrival.set(peer, (this.#deadOnArrival.get(peer) ?? 0) + 1);
    if (!first) return;
    queueMicrotask(() => {
      for (const [name, count] of this.#deadOnArrival) {
        const [what, its] = count === 1 ? ["a message", "its"] : [`${count} messages`, "their"];
        this.#deps.emit({
          event: "log",
          level: "info",
          text:
            `${what} from ${name} arrived after ${its} lifetime had run out on our trusted time: not shown, ` +
            `and ${its} text was never stored`,
        });
      }
      this.#deadOnArrival.clear();
    });
  }

  #reveal(m: IncomingMessage): void {
    const stored: Omit<StoredMessage, "seq"> = { ...m, direction: "in", readAt: null, state: "delivered" };
    if (isVisible(stored, this.#deps.clock.now(), this.#deps.maxUnreadMs)) this.#deps.announce(stored);
    else this.#deps.hide(m.peer, m.id);
  }

  /** The receipts of one committed batch settle together: one microtask later they go out in one write. */
  #schedule(s: InboxSession, q: SessionQueue): void {
    if (q.scheduled) return;
    q.scheduled = true;
    queueMicrotask(() => {
      q.scheduled = false;
      void this.#writeReceipts(s, q);
    });
  }

  async #writeReceipts(s: InboxSession, q: SessionQueue): Promise<void> {
    if (q.writing) return; // the running loop picks up what was committed meanwhile
    q.writing = true;
    try {
      for (;;) {
        const acks: Receipt[] = [];
        // A peer that takes `acks` gets the receipts of a run in one frame (one to encode, one to parse).
        const many = s.peerCaps?.has(CAP_ACKS) === true;
        let run: string[] | null = null;
        let failure: Error | null = null;
        let n = 0;
        while (n < q.entries.length && q.entries[n].status !== "committing") {
          const e = q.entries[n++];
          if (e.status === "failed") {
            failure = e.error;
            break;
          }
          if (e.refuse) {
            acks.push({ t: "refuse", id: e.id, code: e.refuse });
            run = null;
          } else if (!many) {
            acks.push({ t: "ack", id: e.id });
          } else if (run && run.length < MAX_ACK_IDS) {
            run.push(e.id);
          } else {
            run = [e.id];
            acks.push({ t: "acks", ids: run });
          }
        }
        if (n === 0) break;
        if (failure) {
          // The messages before it are on disk and acknowledged; it and the rest are not (the session ends,
          // so the sender keeps them and tries again).
          this.#drop(q, q.entries.length);
          if (acks.length && s.state === "open") void s.sendBatch(acks).catch(() => {});
          this.#deps.emit({
            event: "error",
            code: "STORE_FAILED",
            message: `cannot store a message: ${failure.message}`,
          });
          s.fail("STORE_FAILED", failure.message);
          this.#release(q);
          this.#idle(q);
          return;
        }
        this.#drop(q, n);
        // sendBatch writes to the socket before it first waits: a refusal waiting for these receipts may go
        // out right after them.
        const sent = s.state === "open" ? s.sendBatch(acks).catch(() => {}) : null;
        // Nobody to acknowledge to: the sender resends, the id check absorbs it.
        if (!sent) this.#drop(q, q.entries.length);
        this.#idle(q);
        await sent;
        this.#release(q);
      }
    } finally {
      q.writing = false;
    }
  }

  #idle(q: SessionQueue): void {
    if (q.entries.length > 0 || q.idle.length === 0) return;
    for (const w of q.idle.splice(0)) w();
  }

  #full(q: SessionQueue): boolean {
    return q.entries.length >= this.#maxPending || q.chars >= this.#maxPendingChars;
  }

  /** Forgets the first n entries (acknowledged, or never to be). */
  #drop(q: SessionQueue, n: number): void {
    for (const e of q.entries.splice(0, n)) q.chars -= e.chars;
  }

  #release(q: SessionQueue): void {
    if (q.waiter && !this.#full(q)) {
      const w = q.waiter;
      q.waiter = null;
      w();
    }
  }
}
