/**
 * An in-memory ChatEngineApi for UI tests, the benchmark and the fake-engine demo driver. It follows the
 * contract in client/engine_types.ts the way the real engine must: `history()` leaves expiring messages out
 * while time is unverified, an "after read" lifetime starts at `markRead`, and every change is announced with
 * the matching event. Tests drive it (`receive`, `expire`, `setTime`, ...) and inspect what the UI asked of it.
 */
import type { TimeStatus } from "../../clock/types.ts";
import type {
  ChatEngineApi,
  ChatMessage,
  Contact,
  DeliveryState,
  EngineEvent,
  PeerInfo,
  PhonebookStatus,
  SendOptions,
} from "../../client/engine_types.ts";

export const FAKE_FINGERPRINT_ME = "a1".repeat(32);

export function verifiedTime(nowMs: number, uncertaintyMs = 20): TimeStatus {
  return {
    state: "verified",
    time: { earliestMs: nowMs - uncertaintyMs, latestMs: nowMs + uncertaintyMs, nowMs },
    uncertaintyMs,
    configured: 3,
    answered: 3,
    agreeing: 3,
    singleSource: false,
    lastVerifiedMs: nowMs,
  };
}

export function unverifiedTime(): TimeStatus {
  return {
    state: "unverified",
    time: null,
    uncertaintyMs: null,
    configured: 3,
    answered: 0,
    agreeing: 0,
    singleSource: false,
    lastVerifiedMs: null,
  };
}

export function fakePeerInfo(name: string, over: Partial<PeerInfo> = {}): PeerInfo {
  const fp = Array.from({ length: 32 }, (_, i) => ((name.charCodeAt(i % name.length) + i) % 256))
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  return {
    name,
    subject: `CN=${name}`,
    issuer: "CN=securechat test CA",
    serial: "0f1e2d3c4b5a6978",
    notBefore: Date.UTC(2026, 10, 27),
    notAfter: Date.UTC(2026, 11, 4),
    validNow: true,
    fingerprint: fp,
    pinnedFingerprint: fp,
    revoked: false,
    pin: "first-use",
    tlsVersion: "TLSv1.3",
    cipher: "TLS_AES_256_GCM_SHA384",
    connected: true,
    ...over,
  };
}

export interface FakeEngineOptions {
  name?: string;
  contacts?: Contact[];
  time?: TimeStatus;
  /** Trusted now for new messages and deadlines (defaults to Date.now() at each use). */
  now?: () => number;
  /** When true, sends go sending -> sent -> delivered on later microtasks (to contacts that are online). */
  autoDeliver?: boolean;
  /** What `phonebookStatus()` answers (reachable by default). */
  phonebook?: PhonebookStatus;
}

export class FakeEngine implements ChatEngineApi {
  readonly name: string;
  readonly sent: { to: string; text: string; opts: SendOptions | undefined }[] = [];
  readonly readMarks: string[] = [];
  readonly verified: string[] = [];
  readonly accepted: string[] = [];
  readonly typingTo: string[] = [];
  readonly ttlSet: { peer: string; ttlMs: number | null }[] = [];
  closed = false;
  historyCalls = 0;
  private listeners = new Set<(e: EngineEvent) => void>();
  private messages = new Map<string, ChatMessage>();
  private contactList: Contact[];
  private peers = new Map<string, PeerInfo>();
  private time: TimeStatus;
  private seq = 0;
  private readonly clock: () => number;
  private readonly autoDeliver: boolean;
  private readonly phonebook: PhonebookStatus;

  constructor(opts: FakeEngineOptions = {}) {
    this.name = opts.name ?? "me";
    this.contactList = (opts.contacts ?? []).map((c) => ({ ...c }));
    this.clock = opts.now ?? (() => Date.now());
    this.time = opts.time ?? verifiedTime(this.clock());
    this.autoDeliver = opts.autoDeliver ?? false;
    this.phonebook = opts.phonebook ?? { reachable: true, reason: null };
    for (const c of this.contactList) this.peers.set(c.name, fakePeerInfo(c.name, { pin: c.pin }));
  }

  // ---- driving the fake -------------------------------------------------------------------------------------

  emit(e: EngineEvent): void {
    for (const l of [...this.listeners]) l(e);
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  /** Stores a message as the engine would and announces it (unless hidden by the fail-closed rule). */
  receive(from: string, text: string, over: Partial<ChatMessage> = {}): ChatMessage {
    const now = this.clock();
    const m: ChatMessage = {
      id: `in-${++this.seq}`,
      peer: from,
      from,
      direction: "in",
      text,
      sentAt: now,
      expiresAt: null,
      ttlMs: null,
      ttlMode: null,
      state: "delivered",
      ...over,
    };
    this.messages.set(m.id, m);
    const c = this.contactList.find((x) => x.name === from);
    if (c) c.unread++;
    if (this.isVisible(m)) this.emit({ event: "message", message: { ...m } });
    return m;
  }

  /** Adds a message straight to the store without an event (for preloaded history). */
  seed(m: ChatMessage): void {
    this.messages.set(m.id, m);
  }

  expire(id: string): void {
    const m = this.messages.get(id);
    if (!m) return;
    this.messages.delete(id);
    this.emit({ event: "expired", id, peer: m.peer });
  }

  setState(id: string, state: DeliveryState): void {
    const m = this.messages.get(id);
    if (!m) return;
    this.messages.set(id, { ...m, state });
    const ev: EngineEvent = state === "read"
      ? { event: "read", id, by: m.peer }
      : state === "failed"
      ? { event: "failed", id, to: m.peer, reason: "peer unreachable" }
      : state === "delivered"
      ? { event: "delivered", id, to: m.peer }
      : { event: "sent", id, to: m.peer };
    this.emit(ev);
  }

  setTime(status: TimeStatus): void {
    this.time = status;
    this.emit({ event: "time", status });
  }

  setPeerInfo(name: string, info: PeerInfo | null): void {
    if (info) this.peers.set(name, info);
    else this.peers.delete(name);
  }

  setContacts(list: Contact[]): void {
    this.contactList = list.map((c) => ({ ...c }));
  }

  private isVisible(m: ChatMessage): boolean {
    const expiring = m.expiresAt !== null || m.ttlMs !== null;
    if (expiring && this.time.state === "unverified") return false;
    return !(m.expiresAt !== null && m.expiresAt <= this.clock());
  }

  // ---- ChatEngineApi ----------------------------------------------------------------------------------------

  subscribe(listener: (e: EngineEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  send(to: string, text: string, opts?: SendOptions): Promise<ChatMessage> {
    this.sent.push({ to, text, opts });
    const now = this.clock();
    const ttlMs = opts?.ttlMs ?? null;
    const ttlMode = ttlMs === null ? null : opts?.ttlMode ?? "send";
    const m: ChatMessage = {
      id: `out-${++this.seq}`,
      peer: to,
      from: this.name,
      direction: "out",
      text,
      sentAt: now,
      expiresAt: ttlMs !== null && ttlMode === "send" ? now + ttlMs : null,
      ttlMs,
      ttlMode,
      state: "sending",
    };
    this.messages.set(m.id, m);
    // Like the engine's outbox: a message to a peer that is offline (or revoked) waits, still "sending".
    const peer = this.contactList.find((c) => c.name === to);
    if (this.autoDeliver && peer?.online !== false && peer?.revoked !== true) {
      queueMicrotask(() => {
        this.setState(m.id, "sent");
        queueMicrotask(() => this.setState(m.id, "delivered"));
      });
    }
    return Promise.resolve({ ...m });
  }

  contacts(): Promise<Contact[]> {
    return Promise.resolve(this.contactList.map((c) => ({ ...c })));
  }

  history(peer: string): ChatMessage[] {
    this.historyCalls++;
    return [...this.messages.values()].filter((m) => m.peer === peer && this.isVisible(m)).map((m) => ({
      ...m,
    }))
      .sort((a, b) => a.sentAt - b.sentAt);
  }

  markRead(id: string): void {
    this.readMarks.push(id);
    const m = this.messages.get(id);
    if (!m || m.direction !== "in") return;
    const started = m.ttlMode === "read" && m.expiresAt === null && m.ttlMs !== null;
    this.messages.set(id, {
      ...m,
      state: "read",
      expiresAt: started ? this.clock() + (m.ttlMs ?? 0) : m.expiresAt,
    });
    const c = this.contactList.find((x) => x.name === m.peer);
    if (c && c.unread > 0) c.unread--;
  }

  setDefaultTtl(peer: string, ttlMs: number | null): void {
    this.ttlSet.push({ peer, ttlMs });
    const c = this.contactList.find((x) => x.name === peer);
    if (c) c.defaultTtlMs = ttlMs;
  }

  acceptKey(peer: string): void {
    this.accepted.push(peer);
    const c = this.contactList.find((x) => x.name === peer);
    if (c) c.pin = "pinned";
    const p = this.peers.get(peer);
    if (p) this.peers.set(peer, { ...p, pin: "pinned", pinnedFingerprint: p.fingerprint });
  }

  markVerified(peer: string): void {
    this.verified.push(peer);
    const c = this.contactList.find((x) => x.name === peer);
    if (c) c.pin = "verified";
    const p = this.peers.get(peer);
    if (p) this.peers.set(peer, { ...p, pin: "verified" });
  }

  peerInfo(peer: string): PeerInfo | null {
    return this.peers.get(peer) ?? null;
  }

  ownFingerprint(): string {
    return FAKE_FINGERPRINT_ME;
  }

  phonebookStatus(): PhonebookStatus {
    return { ...this.phonebook };
  }

  typing(peer: string): void {
    this.typingTo.push(peer);
  }

  timeStatus(): TimeStatus {
    if (this.time.state === "unverified" || this.time.time === null) return this.time;
    const nowMs = this.clock();
    const u = this.time.uncertaintyMs ?? 0;
    return { ...this.time, time: { earliestMs: nowMs - u, latestMs: nowMs + u, nowMs } };
  }

  close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    return Promise.resolve();
  }
}

/** `n` alternating messages with `peer`, one a minute, ending at `endMs`: a long conversation for benchmarks. */
export function seededConversation(peer: string, me: string, n: number, endMs: number): ChatMessage[] {
  return Array.from({ length: n }, (_, i): ChatMessage => {
    const out = i % 2 === 0;
    return {
      id: `seed-${i}`,
      peer,
      from: out ? me : peer,
      direction: out ? "out" : "in",
      text: `message ${i}: ${"lorem ipsum dolor sit amet ".repeat(1 + (i % 4))}`,
      sentAt: endMs - (n - i) * 60_000,
      expiresAt: null,
      ttlMs: null,
      ttlMode: null,
      state: "read",
    };
  });
}

export function contact(name: string, over: Partial<Contact> = {}): Contact {
  return { name, online: true, unread: 0, pin: "first-use", defaultTtlMs: null, ...over };
}

/**
 * Run as a program, this opens the real UI on a scripted fake engine: an "assistant" that answers every
 * message and sends one self-destructing message. Used to try the UI by hand and by the tmux test when no
 * real engine is wanted. `--unverified` starts with time unverified (and verifies it after 3 s); `--home DIR`
 * keeps settings.json there (needs --allow-read/--allow-write on it); `--script NAME` adds a scripted scene
 * (see SCRIPTS).
 */
async function fakeMain(args: string[]): Promise<void> {
  const { runTui } = await import("../../client/tui/mod.ts");
  const unverified = args.includes("--unverified");
  const seedAt = args.indexOf("--seed");
  const seedCount = seedAt >= 0 ? Number(args[seedAt + 1]) : 0;
  const engine = new FakeEngine({
    name: "you",
    contacts: [contact("assistant"), contact("carol", { online: false, pin: "verified" })],
    autoDeliver: true,
    time: unverified ? unverifiedTime() : undefined,
  });
  for (const m of seededConversation("assistant", "you", seedCount, Date.now())) engine.seed(m);
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  if (unverified) {
    later(3000, () => engine.setTime(verifiedTime(Date.now())));
    // An engine bug that leaks an expiring message while time is unverified: the UI must not show it.
    later(1500, () =>
      engine.emit({
        event: "message",
        message: {
          id: "leaked",
          peer: "assistant",
          from: "assistant",
          direction: "in",
          text: "LEAKED expiring message",
          sentAt: Date.now(),
          expiresAt: Date.now() + 60_000,
          ttlMs: 60_000,
          ttlMode: "send",
          state: "delivered",
        },
      }));
  }
  later(500, () => engine.receive("assistant", "Hello! I answer every message. Try /msg hi --ttl 10s"));
  const script = args.includes("--script") ? args[args.indexOf("--script") + 1] : "";
  if (script === "wrap") {
    // Numbered words: a test reads how many fit on one row.
    const words = Array.from({ length: 80 }, (_, i) => `w${String(i).padStart(2, "0")}`).join(" ");
    later(700, () => engine.receive("assistant", `WRAP ${words}`));
  }
  if (script === "other") {
    // A message in a conversation that is not open: the bell, the title, the activity list.
    later(2500, () => engine.receive("carol", "a word from carol"));
  }
  later(1000, () => {
    const m = engine.receive("assistant", "This message destroys itself in 20 seconds.", {
      ttlMs: 20_000,
      ttlMode: "send",
      expiresAt: Date.now() + 20_000,
    });
    later(20_000, () => engine.expire(m.id));
  });
  engine.subscribe((e) => {
    if (e.event === "delivered") {
      later(400, () => engine.setState(e.id, "read"));
      later(
        600,
        () => engine.receive(e.to, `You said something (${new Date().toISOString().slice(11, 19)})`),
      );
    }
  });
  const origSend = engine.send.bind(engine);
  engine.send = async (to, text, opts) => {
    const m = await origSend(to, text, opts);
    if (m.expiresAt !== null) later(m.expiresAt - Date.now(), () => engine.expire(m.id));
    return m;
  };
  try {
    const homeAt = args.indexOf("--home");
    await runTui(engine, { home: homeAt >= 0 ? args[homeAt + 1] : null });
  } finally {
    for (const t of timers) clearTimeout(t);
  }
}

if (import.meta.main) await fakeMain(Deno.args);
