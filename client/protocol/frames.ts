/**
 * The frames of protocol version 1 (docs/protocol.md): their types, a strict parser that turns one frame body
 * into a checked object or throws ProtocolError, and the encoder. Pure: no I/O, no clock.
 */
import type { TimeProof } from "../../clock/types.ts";
import type { TtlMode } from "../engine_types.ts";
import { frameBytes } from "./codec.ts";
import {
  CAP_PATTERN,
  FRAME_TYPES,
  type FrameType,
  LENGTH_PREFIX_BYTES,
  MAX_ACK_IDS,
  MAX_CAPS,
  MAX_FRAME_BYTES,
  MAX_JSON_DEPTH,
  MAX_TEXT_BYTES,
  MAX_TTL_MS,
  MESSAGE_ID_PATTERN,
  MIN_TTL_MS,
} from "./constants.ts";
import { ProtocolError } from "./errors.ts";

export type HelloRole = "dialer" | "listener";

export interface HelloFrame {
  t: "hello";
  v: number;
  role: HelloRole;
  from: string;
  to: string;
  /** SHA-256 fingerprints (64 hex) of the sender's and the receiver's certificates as the sender sees them. */
  fromFp: string;
  toFp: string;
  /** base64 signature with the sender's certificate key over helloSignedData(...). */
  sig: string;
  /** Optional features the sender takes (constants.ts, OUR_CAPS); absent from a peer of an older version.
   * Not covered by the signature: the TLS channel the hello travels in protects it. */
  caps?: string[];
}

export interface MsgFrame {
  t: "msg";
  id: string;
  from: string;
  to: string;
  text: string;
  /** Sender's trusted time of sending, Unix ms. */
  sentAt: number;
  ttlMs?: number;
  ttlMode?: TtlMode;
  /** Roughtime proof over timeProofData(...); required when ttlMs is present. */
  proof?: TimeProof;
}

export interface AckFrame {
  t: "ack";
  id: string;
}
/** Delivery receipts for several messages at once, in order: the same as one `ack` per id. Sent only to a
 * peer whose hello listed CAP_ACKS. */
export interface AcksFrame {
  t: "acks";
  ids: string[];
}
/** The receiver did not store message `id` and will not until the reason is gone (the sender keeps it
 * queued and sends it again later). TIME_UNVERIFIED: an expiring message reached a receiver without
 * verified time, which could not keep it from outliving its deadline. */
export type RefuseCode = "TIME_UNVERIFIED";
export const REFUSE_CODES: readonly RefuseCode[] = ["TIME_UNVERIFIED"];
export interface RefuseFrame {
  t: "refuse";
  id: string;
  code: RefuseCode;
}
export interface ReadFrame {
  t: "read";
  id: string;
  /** Receiver's trusted time of first display, Unix ms. */
  readAt: number;
}
export interface TypingFrame {
  t: "typing";
}
export interface PingFrame {
  t: "ping";
}
export interface PongFrame {
  t: "pong";
}
export interface ErrorFrame {
  t: "error";
  code: string;
  message: string;
}
export interface ByeFrame {
  t: "bye";
  reason: string;
}

export type Frame =
  | HelloFrame
  | MsgFrame
  | AckFrame
  | AcksFrame
  | RefuseFrame
  | ReadFrame
  | TypingFrame
  | PingFrame
  | PongFrame
  | ErrorFrame
  | ByeFrame;

const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);
const FINGERPRINT = /^[0-9a-f]{64}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const MAX_SHORT_STRING = 4096;
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const enc = new TextEncoder();

function bad(field: string, why: string): never {
  throw new ProtocolError("BAD_FIELD", `${field}: ${why}`);
}

/** Rejects prototype-polluting keys anywhere, and nesting deeper than MAX_JSON_DEPTH. */
function checkShape(v: unknown, depth: number): void {
  if (typeof v !== "object" || v === null) return;
  if (depth > MAX_JSON_DEPTH) throw new ProtocolError("BAD_JSON", "JSON nested too deeply");
  if (Array.isArray(v)) {
    for (const x of v) checkShape(x, depth + 1);
    return;
  }
  for (const k of Object.keys(v)) {
    if (FORBIDDEN_KEYS.has(k)) throw new ProtocolError("FORBIDDEN_KEY", `forbidden key "${k}"`);
    checkShape((v as Record<string, unknown>)[k], depth + 1);
  }
}

function str(o: Record<string, unknown>, k: string, pattern?: RegExp, max = MAX_SHORT_STRING): string {
  const v = o[k];
  if (typeof v !== "string") bad(k, "must be a string");
  if (v.length > max) bad(k, "too long");
  if (pattern && !pattern.test(v)) bad(k, "has the wrong form");
  return v;
}

function int(o: Record<string, unknown>, k: string): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) bad(k, "must be a non-negative integer");
  return v;
}

/** A lifetime as sent on the wire: an integer number of ms in [MIN_TTL_MS, MAX_TTL_MS]. Throws BAD_TTL. */
export function checkTtlMs(v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < MIN_TTL_MS || v > MAX_TTL_MS) {
    throw new ProtocolError(
      "BAD_TTL",
      `ttlMs must be an integer from ${MIN_TTL_MS} to ${MAX_TTL_MS}, got ${String(v)}`,
    );
  }
  return v;
}

function parseProof(v: unknown): TimeProof {
  if (typeof v !== "object" || v === null || Array.isArray(v)) bad("proof", "must be an object");
  const o = v as Record<string, unknown>;
  const version = o.version;
  if (version !== "rfc" && version !== "draft" && version !== "google") bad("proof.version", "unknown");
  return {
    version,
    publicKey: str(o, "publicKey", BASE64, 64),
    rand: str(o, "rand", BASE64, 128),
    request: str(o, "request", BASE64, 4096),
    response: str(o, "response", BASE64, 8192),
  };
}

/** Parses one frame body. Throws ProtocolError: BAD_UTF8, BAD_JSON, FORBIDDEN_KEY, UNKNOWN_TYPE, BAD_FIELD,
 * BAD_TTL. Fields a frame type does not define are ignored (and not kept). */
export function parseFrame(body: Uint8Array): Frame {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw new ProtocolError("BAD_UTF8", "frame is not valid UTF-8");
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ProtocolError("BAD_JSON", "frame is not JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ProtocolError("BAD_JSON", "frame must be a JSON object");
  }
  checkShape(v, 1);
  const o = v as Record<string, unknown>;
  const t = o.t;
  if (typeof t !== "string" || !(FRAME_TYPES as readonly string[]).includes(t)) {
    throw new ProtocolError("UNKNOWN_TYPE", `unknown frame type ${JSON.stringify(t)?.slice(0, 40)}`);
  }
  switch (t as FrameType) {
    case "hello": {
      const role = o.role;
      if (role !== "dialer" && role !== "listener") bad("role", "must be dialer or listener");
      const h: HelloFrame = {
        t: "hello",
        v: int(o, "v"),
        role,
        from: str(o, "from", NAME),
        to: str(o, "to", NAME),
        fromFp: str(o, "fromFp", FINGERPRINT),
        toFp: str(o, "toFp", FINGERPRINT),
        sig: str(o, "sig", BASE64, 1024),
      };
      if ("caps" in o) {
        const caps = o.caps;
        if (!Array.isArray(caps) || caps.length > MAX_CAPS) {
          bad("caps", `must be a list of at most ${MAX_CAPS}`);
        }
        h.caps = caps.map((c, i) => {
          if (typeof c !== "string" || !CAP_PATTERN.test(c)) bad(`caps[${i}]`, "has the wrong form");
          return c;
        });
      }
      return h;
    }
    case "msg": {
      const text = str(o, "text", undefined, MAX_TEXT_BYTES);
      // A UTF-16 unit is at most 3 UTF-8 bytes: only a long text needs encoding to know its size.
      if (text.length * 3 > MAX_TEXT_BYTES && enc.encode(text).length > MAX_TEXT_BYTES) {
        bad("text", "too long");
      }
      const f: MsgFrame = {
        t: "msg",
        id: str(o, "id", MESSAGE_ID_PATTERN),
        from: str(o, "from", NAME),
        to: str(o, "to", NAME),
        text,
        sentAt: int(o, "sentAt"),
      };
      if ("ttlMs" in o) {
        f.ttlMs = checkTtlMs(o.ttlMs);
        const mode = o.ttlMode ?? "send";
        if (mode !== "send" && mode !== "read") bad("ttlMode", "must be send or read");
        f.ttlMode = mode;
        if (!("proof" in o)) throw new ProtocolError("BAD_TIME_PROOF", "an expiring message needs a proof");
        f.proof = parseProof(o.proof);
      } else if ("ttlMode" in o) {
        throw new ProtocolError("BAD_TTL", "ttlMode without ttlMs");
      }
      return f;
    }
    case "ack":
      return { t: "ack", id: str(o, "id", MESSAGE_ID_PATTERN) };
    case "acks": {
      const ids = o.ids;
      if (!Array.isArray(ids) || ids.length === 0 || ids.length > MAX_ACK_IDS) {
        bad("ids", `must be a list of 1 to ${MAX_ACK_IDS} ids`);
      }
      return {
        t: "acks",
        ids: ids.map((id, i) => {
          if (typeof id !== "string" || !MESSAGE_ID_PATTERN.test(id)) bad(`ids[${i}]`, "has the wrong form");
          return id;
        }),
      };
    }
    case "refuse": {
      const code = o.code;
      if (typeof code !== "string" || !(REFUSE_CODES as readonly string[]).includes(code)) {
        throw new ProtocolError("BAD_FIELD", `"code" must be one of ${REFUSE_CODES.join(", ")}`);
      }
      return { t: "refuse", id: str(o, "id", MESSAGE_ID_PATTERN), code: code as RefuseCode };
    }
    case "read":
      return { t: "read", id: str(o, "id", MESSAGE_ID_PATTERN), readAt: int(o, "readAt") };
    case "typing":
      return { t: "typing" };
    case "ping":
      return { t: "ping" };
    case "pong":
      return { t: "pong" };
    case "error":
      return { t: "error", code: str(o, "code", undefined, 64), message: str(o, "message", undefined, 512) };
    case "bye":
      return { t: "bye", reason: typeof o.reason === "string" ? o.reason.slice(0, 256) : "" };
  }
}

/** Serialises and frames one frame. */
export function encodeFrame(f: Frame): Uint8Array {
  return frameBytes(enc.encode(JSON.stringify(f)));
}

/** Serialises and frames several frames into one buffer (what `encodeFrame` of each, concatenated, gives),
 * each JSON text encoded straight into its place: a batch of receipts or an outbox flush costs one buffer,
 * not three copies per frame. Throws ProtocolError FRAME_TOO_LARGE like frameBytes. */
export function encodeFrames(frames: readonly Frame[], maxFrameBytes = MAX_FRAME_BYTES): Uint8Array {
  const texts = frames.map((f) => JSON.stringify(f));
  // A UTF-16 code unit takes at most 3 UTF-8 bytes.
  let bound = 0;
  for (const t of texts) bound += LENGTH_PREFIX_BYTES + 3 * t.length;
  const out = new Uint8Array(bound);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const t of texts) {
    const { written } = enc.encodeInto(t, out.subarray(at + LENGTH_PREFIX_BYTES));
    if (written > maxFrameBytes) {
      throw new ProtocolError("FRAME_TOO_LARGE", `frame of ${written} bytes exceeds ${maxFrameBytes}`);
    }
    view.setUint32(at, written, false);
    at += LENGTH_PREFIX_BYTES + written;
  }
  return out.subarray(0, at);
}
