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
  SERVER_VERSIONS,
  TYPE_REQUEST,
  VERSION_PREFERENCE,
  VERSION_RFC,
} from "./constants.ts";
import { publicKeyFromSeed, randomBytes } from "./crypto.ts";
import { fail } from "./errors.ts";
import type { HashFamily } from "./merkle.ts";
import { parseRequest, type RoughtimeRequest, srvValue } from "./request.ts";
import { buildCert, buildResponses } from "./response.ts";
import { bytesEqual } from "./wire.ts";

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

interface Accepted {
  index: number;
  request: RoughtimeRequest;
  key: LongTermKey;
  version: number | null;
}

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

  constructor(opts: ResponderOptions) {
    const seeds = [opts.longTermSeed, ...(opts.extraLongTermSeeds ?? [])];
    this.keys = seeds.map((seed) => {
      const publicKey = publicKeyFromSeed(seed);
      return { seed, publicKey, srv: srvValue(publicKey), delegation: null };
    });
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

  /** Key selection (RFC 10049 section 5.2): SRV names the key; without SRV only a single-key server answers. */
  private selectKey(req: RoughtimeRequest): LongTermKey | null {
    if (req.srv) return this.keys.find((k) => bytesEqual(k.srv, req.srv as Uint8Array)) ?? null;
    return this.keys.length === 1 ? this.keys[0] : null;
  }

  private accept(packet: Uint8Array, index: number, transport: Transport): Accepted | null {
    // The 1,024-byte minimum is a UDP rule (RFC 10049 section 5.1: "at least 1024 bytes when the UDP
    // transport mode is used"; section 9.7: it keeps a spoofed datagram from being amplified). A TCP peer has
    // completed a handshake from its own address, so nothing is reflected and unpadded requests are fine.
    if (packet.length > MAX_REQUEST_SIZE) return null;
    if (transport === "udp" && packet.length < MIN_REQUEST_SIZE) return null;
    let request: RoughtimeRequest;
    try {
      request = parseRequest(packet);
    } catch {
      return null;
    }
    const key = this.selectKey(request);
    if (!key) return null;
    if (request.family === "google") return { index, request, key, version: null };
    const version = VERSION_PREFERENCE.find((v) =>
      request.offered.includes(v) && SERVER_VERSIONS.includes(v)
    );
    if (version === undefined) return null;
    // The RFC requires TYPE = 0; drafts 12-13 clients sent no TYPE, so only its presence is optional there.
    if (request.type !== null ? request.type !== TYPE_REQUEST : version === VERSION_RFC) return null;
    return { index, request, key, version };
  }

  /** Answers a set of requests that arrived together; result[i] is the reply to packets[i] or null. Over
   * UDP (the default) requests under 1,024 bytes are dropped and no reply is larger than its request. */
  respond(packets: Uint8Array[], transport: Transport = "udp"): (Uint8Array | null)[] {
    this.stats.received += packets.length;
    const out: (Uint8Array | null)[] = packets.map(() => null);
    const groups = new Map<string, Accepted[]>();
    packets.forEach((p, i) => {
      const a = this.accept(p, i, transport);
      if (!a) return;
      const g = `${this.keys.indexOf(a.key)}/${a.request.family}/${a.version}`;
      const list = groups.get(g);
      if (list) list.push(a);
      else groups.set(g, [a]);
    });
    const nowMs = this.now();
    // A clock that returns nonsense (NaN, before 1970) cannot be signed: answer nothing rather than garbage.
    if (!Number.isFinite(nowMs) || nowMs < 0) groups.clear();
    for (const group of groups.values()) {
      for (let s = 0; s < group.length; s += this.maxBatch) {
        this.signBatch(group.slice(s, s + this.maxBatch), nowMs, packets, out, transport);
      }
    }
    for (const r of out) {
      if (r) this.stats.answered++;
      else this.stats.dropped++;
    }
    return out;
  }

  private signBatch(
    batch: Accepted[],
    nowMs: number,
    packets: Uint8Array[],
    out: (Uint8Array | null)[],
    transport: Transport,
  ): void {
    const family: HashFamily = batch[0].request.family;
    const d = this.delegation(batch[0].key, nowMs);
    const ietf = family === "ietf";
    const { replies } = buildResponses(batch.map((a) => a.request), {
      family,
      version: batch[0].version,
      supported: SERVER_VERSIONS,
      midp: ietf ? BigInt(Math.round(nowMs / 1000)) : BigInt(Math.round(nowMs * 1000)),
      radi: ietf ? this.radiusSeconds : this.radiusSeconds * 1_000_000,
      onlineSeed: d.onlineSeed,
      cert: ietf ? d.certIetf : d.certGoogle,
    });
    this.stats.batches++;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length);
    this.stats.batchSizes[batch.length] = (this.stats.batchSizes[batch.length] ?? 0) + 1;
    batch.forEach((a, i) => {
      // Anti-amplification (RFC 10049 section 9.7): over UDP never more bytes out than came in.
      if (transport === "tcp" || replies[i].length <= packets[a.index].length) out[a.index] = replies[i];
    });
  }
}
