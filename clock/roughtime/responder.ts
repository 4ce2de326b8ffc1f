/**
 * The pure Roughtime server: turns request packets into reply packets (null = drop). Key selection, version
 * choice, delegation and rotation, batch signing and the size rules live here; the UDP loop (server.ts) and
 * the TCP framing (tcp.ts) only move bytes. A request we cannot or will not serve is dropped: Roughtime
 * servers never send error replies.
 */
import {
  DEFAULT_RADIUS_SECONDS,
  DELEGATION_BACKDATE_MS,
  DELEGATION_VALIDITY_MS,
  MAX_BATCH_SIZE,
  MAX_REQUEST_SIZE,
  MIN_REQUEST_SIZE,
  NONCE_SIZE_GOOGLE,
  SERVER_VERSIONS,
  TYPE_REQUEST,
  VERSION_PREFERENCE,
  VERSION_RFC,
} from "./constants.ts";
import { publicKeyFromSeed, randomBytes } from "./crypto.ts";
import { fail } from "./errors.ts";
import { offers, RequestScan, scanRequest, srvValue } from "./request.ts";
import { BatchRequests, buildCert, signBatch } from "./response.ts";

/** What the pure responder needs: keys, clock, radius, delegation lifetime, batch bound. */
export interface ResponderOptions {
  longTermSeed: Uint8Array;
  /** Unix ms the server reports; default Date.now (tests pass a lying clock). */
  now?: () => number;
  /** Default 3 (IETF seconds); Google replies carry the same radius in microseconds. */
  radiusSeconds?: number;
  /** More long-term keys served on the same socket, selected by SRV (a multi-tenant server). */
  extraLongTermSeeds?: Uint8Array[];
  /** Lifetime of one online key's delegation; it is replaced halfway through. Default 24 h. */
  delegationValidityMs?: number;
  /** Largest batch under one signature, 1-64. Default 64. */
  maxBatchSize?: number;
}

export interface RoughtimeServerStats {
  received: number;
  answered: number;
  dropped: number;
  batches: number;
  largestBatch: number;
  /** batchSizes[n] = how many signed batches had n requests. */
  batchSizes: Record<number, number>;
  rotations: number;
}

interface Delegation {
  onlineSeed: Uint8Array;
  notBeforeMs: number;
  notAfterMs: number;
  rotateAtMs: number;
  certIetf: Uint8Array;
  certGoogle: Uint8Array;
}

interface LongTermKey {
  seed: Uint8Array;
  publicKey: Uint8Array;
  srv: Uint8Array;
  delegation: Delegation | null;
}

/** How a request arrived: the size rules differ (see Responder.accept). */
export type Transport = "udp" | "tcp";

/** The IETF versions we answer, most preferred first; a request's group is (key, version or Google). */
const ANSWERED_VERSIONS: readonly number[] = VERSION_PREFERENCE.filter((v) => SERVER_VERSIONS.includes(v));
const GOOGLE_VARIANT = ANSWERED_VERSIONS.length;
const VARIANTS = ANSWERED_VERSIONS.length + 1;

/** The pure server: turns request datagrams into reply datagrams (null = drop). */
export class Responder {
  readonly keys: LongTermKey[];
  readonly stats: RoughtimeServerStats = {
    received: 0,
    answered: 0,
    dropped: 0,
    batches: 0,
    largestBatch: 0,
    batchSizes: {},
    rotations: 0,
  };
  private readonly now: () => number;
  private readonly radiusSeconds: number;
  private readonly validityMs: number;
  private readonly maxBatch: number;
  /** Reused from call to call (respond is synchronous): the scan of one request, each request's nonce
   * position, the requests of each group, and the batch handed to signBatch. */
  private readonly scan = new RequestScan();
  private nonceAt = new Int32Array(64);
  private readonly groups: number[][];
  private readonly batch = new BatchRequests();

  constructor(opts: ResponderOptions) {
    const seeds = [opts.longTermSeed, ...(opts.extraLongTermSeeds ?? [])];
    this.keys = seeds.map((seed) => {
      const publicKey = publicKeyFromSeed(seed);
      return { seed, publicKey, srv: srvValue(publicKey), delegation: null };
    });
    this.groups = Array.from({ length: this.keys.length * VARIANTS }, () => []);
    this.now = opts.now ?? Date.now;
    this.radiusSeconds = opts.radiusSeconds ?? DEFAULT_RADIUS_SECONDS;
    if (!(this.radiusSeconds >= 1 && this.radiusSeconds <= 10 && Number.isInteger(this.radiusSeconds))) {
      fail("BAD_ARGUMENT", "radiusSeconds must be an integer from 1 to 10");
    }
    this.validityMs = opts.delegationValidityMs ?? DELEGATION_VALIDITY_MS;
    this.maxBatch = opts.maxBatchSize ?? MAX_BATCH_SIZE;
    if (!(this.maxBatch >= 1 && this.maxBatch <= MAX_BATCH_SIZE)) {
      fail("BAD_ARGUMENT", "maxBatchSize must be 1-64");
    }
  }

  /** Current delegation for `key`, rotated when due or when our clock left its window. */
  private delegation(key: LongTermKey, nowMs: number): Delegation {
    const d = key.delegation;
    if (d && nowMs < d.rotateAtMs && nowMs >= d.notBeforeMs && nowMs <= d.notAfterMs) return d;
    const onlineSeed = randomBytes(32);
    const onlinePub = publicKeyFromSeed(onlineSeed);
    const notBeforeMs = nowMs - DELEGATION_BACKDATE_MS;
    const notAfterMs = nowMs + this.validityMs;
    const fresh: Delegation = {
      onlineSeed,
      notBeforeMs,
      notAfterMs,
      rotateAtMs: nowMs + this.validityMs / 2,
      certIetf: buildCert(
        "ietf",
        key.seed,
        onlinePub,
        BigInt(Math.floor(notBeforeMs / 1000)),
        BigInt(Math.floor(notAfterMs / 1000)),
      ),
      certGoogle: buildCert(
        "google",
        key.seed,
        onlinePub,
        BigInt(Math.floor(notBeforeMs)) * 1000n,
        BigInt(Math.floor(notAfterMs)) * 1000n,
      ),
    };
    if (d) this.stats.rotations++;
    key.delegation = fresh;
    return fresh;
  }

  /** Key selection (RFC 10049 section 5.2): SRV names the key; without SRV only a single-key server
   * answers. Returns the key's index, or -1. */
  private selectKey(packet: Uint8Array, scan: RequestScan): number {
    if (scan.srvStart < 0) return this.keys.length === 1 ? 0 : -1;
    const at = scan.srvStart;
    for (let k = 0; k < this.keys.length; k++) {
      const srv = this.keys[k].srv;
      let d = 0;
      for (let j = 0; j < 32; j++) d |= srv[j] ^ packet[at + j];
      if (d === 0) return k;
    }
    return -1;
  }

  /** Checks one request and returns the group it is answered in (key * VARIANTS + version choice), or -1
   * to drop it; its nonce's position goes to this.nonceAt[index]. */
  private accept(packet: Uint8Array, index: number, transport: Transport): number {
    // The 1,024-byte minimum is a UDP rule (RFC 10049 section 5.1: "at least 1024 bytes when the UDP
    // transport mode is used"; section 9.7: it keeps a spoofed datagram from being amplified). A TCP peer has
    // completed a handshake from its own address, so nothing is reflected and unpadded requests are fine.
    if (packet.length > MAX_REQUEST_SIZE) return -1;
    if (transport === "udp" && packet.length < MIN_REQUEST_SIZE) return -1;
    const scan = this.scan;
    try {
      scanRequest(packet, scan);
    } catch {
      return -1;
    }
    const key = this.selectKey(packet, scan);
    if (key < 0) return -1;
    this.nonceAt[index] = scan.nonceStart;
    if (scan.family === "google") return key * VARIANTS + GOOGLE_VARIANT;
    let variant = 0;
    while (variant < ANSWERED_VERSIONS.length && !offers(packet, scan, ANSWERED_VERSIONS[variant])) variant++;
    if (variant === ANSWERED_VERSIONS.length) return -1;
    // The RFC requires TYPE = 0; drafts 12-13 clients sent no TYPE, so only its presence is optional there.
    if (scan.type >= 0 ? scan.type !== TYPE_REQUEST : ANSWERED_VERSIONS[variant] === VERSION_RFC) return -1;
    return key * VARIANTS + variant;
  }

  /** Answers a set of requests that arrived together; result[i] is the reply to packets[i] or null. Over
   * UDP (the default) requests under 1,024 bytes are dropped and no reply is larger than its request. */
  respond(packets: Uint8Array[], transport: Transport = "udp"): (Uint8Array | null)[] {
    const count = packets.length;
    this.stats.received += count;
    const out: (Uint8Array | null)[] = new Array(count).fill(null);
    if (this.nonceAt.length < count) this.nonceAt = new Int32Array(Math.max(count, 2 * this.nonceAt.length));
    const groups = this.groups;
    for (const g of groups) g.length = 0;
    for (let i = 0; i < count; i++) {
      const g = this.accept(packets[i], i, transport);
      if (g >= 0) groups[g].push(i);
    }
    const nowMs = this.now();
    // A clock that returns nonsense (NaN, before 1970) cannot be signed: answer nothing rather than garbage.
    if (Number.isFinite(nowMs) && nowMs >= 0) {
      for (let g = 0; g < groups.length; g++) {
        const members = groups[g];
        for (let s = 0; s < members.length; s += this.maxBatch) {
          const e = Math.min(members.length, s + this.maxBatch);
          this.signGroup(g, members, s, e, nowMs, packets, out, transport);
        }
      }
    }
    let answered = 0;
    for (let i = 0; i < count; i++) if (out[i]) answered++;
    this.stats.answered += answered;
    this.stats.dropped += count - answered;
    return out;
  }

  /** Signs members[s, e) of group `g` as one batch and puts each reply in `out`. */
  private signGroup(
    g: number,
    members: number[],
    s: number,
    e: number,
    nowMs: number,
    packets: Uint8Array[],
    out: (Uint8Array | null)[],
    transport: Transport,
  ): void {
    const key = this.keys[Math.floor(g / VARIANTS)];
    const variant = g % VARIANTS;
    const ietf = variant !== GOOGLE_VARIANT;
    const d = this.delegation(key, nowMs);
    const batch = this.batch;
    batch.reset(e - s);
    for (let k = s; k < e; k++) {
      const packet = packets[members[k]];
      const nonceAt = this.nonceAt[members[k]];
      // IETF leaves hash the whole request packet, Google leaves its nonce (RFC 10049 section 5.3).
      if (ietf) batch.add(packet, 0, packet.length, packet, nonceAt);
      else batch.add(packet, nonceAt, nonceAt + NONCE_SIZE_GOOGLE, packet, nonceAt);
    }
    const { replies } = signBatch(batch, {
      family: ietf ? "ietf" : "google",
      version: ietf ? ANSWERED_VERSIONS[variant] : null,
      supported: SERVER_VERSIONS,
      midp: ietf ? BigInt(Math.round(nowMs / 1000)) : BigInt(Math.round(nowMs * 1000)),
      radi: ietf ? this.radiusSeconds : this.radiusSeconds * 1_000_000,
      onlineSeed: d.onlineSeed,
      cert: ietf ? d.certIetf : d.certGoogle,
    });
    const n = e - s;
    this.stats.batches++;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, n);
    this.stats.batchSizes[n] = (this.stats.batchSizes[n] ?? 0) + 1;
    for (let k = 0; k < n; k++) {
      const index = members[s + k];
      // Anti-amplification (RFC 10049 section 9.7): over UDP never more bytes out than came in.
      if (transport === "tcp" || replies[k].length <= packets[index].length) out[index] = replies[k];
    }
  }
}
