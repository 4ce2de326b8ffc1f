/**
 * The Roughtime message encoding shared by every version (RFC 10049 section 4): uint32 N, N-1 offsets,
 * N tags, then values; all little-endian; tags strictly ascending; offsets multiples of 4, non-decreasing.
 * Decoding returns views into the input (no copies) and checks every bound before reading, so any byte
 * string either decodes or raises a RoughtimeError.
 */
import { MAX_MESSAGE_SIZE, MAX_PACKET_SIZE, PACKET_HEADER_SIZE, PACKET_MAGIC } from "./constants.ts";
import { fail } from "./errors.ts";

/** A decoded message: tag -> value, in ascending tag order. */
export type RtMessage = Map<number, Uint8Array>;

export function tagName(tag: number): string {
  let s = "";
  for (let i = 0; i < 4; i++) {
    const c = (tag >>> (8 * i)) & 0xff;
    if (c === 0) continue;
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, "0")}`;
  }
  return s;
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Encodes tag/value pairs (any order; sorted here). Each value except the last must be a multiple of 4. */
export function encodeMessage(entries: Iterable<readonly [number, Uint8Array]>): Uint8Array {
  const list = [...entries].sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < list.length; i++) {
    if (list[i][0] === list[i - 1][0]) fail("BAD_TAG_ORDER", `duplicate tag ${tagName(list[i][0])}`);
  }
  const n = list.length;
  const headerSize = n === 0 ? 4 : 8 * n;
  let valuesSize = 0;
  for (const [tag, v] of list) {
    if (v.length % 4 !== 0) fail("BAD_FIELD_LENGTH", `value of ${tagName(tag)} is not a multiple of 4 bytes`);
    valuesSize += v.length;
  }
  const out = new Uint8Array(headerSize + valuesSize);
  const view = dv(out);
  view.setUint32(0, n, true);
  let offset = 0;
  let pos = headerSize;
  list.forEach(([tag, v], i) => {
    if (i > 0) view.setUint32(4 * i, offset, true);
    view.setUint32(4 + 4 * (n - 1) + 4 * i, tag >>> 0, true);
    out.set(v, pos);
    pos += v.length;
    offset += v.length;
  });
  return out;
}

/** Where the values of a scanned message lie: value i has tag `tags[i]` and spans `starts[i]` to `ends[i]`
 * of the scanned buffer. One layout is reused for scan after scan, so a server reads requests without
 * allocating; `decodeMessage` builds its Map from one. */
export class MessageLayout {
  count = 0;
  tags: Uint32Array;
  starts: Int32Array;
  ends: Int32Array;

  constructor(capacity = 16) {
    this.tags = new Uint32Array(capacity);
    this.starts = new Int32Array(capacity);
    this.ends = new Int32Array(capacity);
  }

  /** Index of `tag` among the scanned values, or -1. */
  find(tag: number): number {
    for (let i = 0; i < this.count; i++) if (this.tags[i] === tag) return i;
    return -1;
  }

  reserve(n: number): void {
    if (this.tags.length >= n) return;
    this.tags = new Uint32Array(n);
    this.starts = new Int32Array(n);
    this.ends = new Int32Array(n);
  }
}

function le32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

/** Checks the message in `buf[from, to)` and records where its values lie (positions in `buf`), the one
 * implementation of the encoding's rules. Throws TRUNCATED, BAD_HEADER, BAD_OFFSETS or BAD_TAG_ORDER. */
export function scanMessage(buf: Uint8Array, from: number, to: number, layout: MessageLayout): void {
  const length = to - from;
  if (length < 4) fail("TRUNCATED", `message of ${length} bytes is shorter than its tag count`);
  if (length > MAX_MESSAGE_SIZE) fail("BAD_HEADER", `message of ${length} bytes is too large`);
  if (length % 4 !== 0) fail("BAD_OFFSETS", `message length ${length} is not a multiple of 4`);
  const n = le32(buf, from);
  layout.count = 0;
  if (n === 0) {
    if (length !== 4) fail("BAD_OFFSETS", "message with no tags has trailing bytes");
    return;
  }
  // Check the header fits before reading it: 4 + 4(N-1) offsets + 4N tags = 8N bytes.
  if (n > Math.floor(length / 8)) fail("TRUNCATED", `${n} tags do not fit in ${length} bytes`);
  layout.reserve(n);
  const headerSize = 8 * n;
  const valuesSize = length - headerSize;
  const values = from + headerSize;
  let prevOffset = 0;
  for (let i = 0; i < n; i++) {
    const o = i === 0 ? 0 : le32(buf, from + 4 * i);
    if (o % 4 !== 0) fail("BAD_OFFSETS", `offset ${o} is not a multiple of 4`);
    if (o < prevOffset) fail("BAD_OFFSETS", "offsets out of order");
    if (o > valuesSize) fail("TRUNCATED", `offset ${o} beyond the ${valuesSize} bytes of values`);
    prevOffset = o;
    layout.starts[i] = values + o;
    if (i > 0) layout.ends[i - 1] = values + o;
  }
  let prevTag = -1;
  for (let i = 0; i < n; i++) {
    const tag = le32(buf, from + 4 * n + 4 * i);
    if (tag <= prevTag) fail("BAD_TAG_ORDER", `tag ${tagName(tag)} is not strictly ascending`);
    prevTag = tag;
    layout.tags[i] = tag;
  }
  layout.ends[n - 1] = to;
  layout.count = n;
}

/** Reused by decodeMessage, which copies what it needs out of it before returning. */
const decodeLayout = new MessageLayout();

/** Decodes one message. Throws TRUNCATED, BAD_OFFSETS or BAD_TAG_ORDER on malformed input. */
export function decodeMessage(buf: Uint8Array): RtMessage {
  scanMessage(buf, 0, buf.length, decodeLayout);
  const msg: RtMessage = new Map();
  const { count, tags, starts, ends } = decodeLayout;
  for (let i = 0; i < count; i++) msg.set(tags[i], buf.subarray(starts[i], ends[i]));
  return msg;
}

/** Wraps a message in the IETF packet header: "ROUGHTIM", uint32 length, message. */
export function wrapPacket(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(PACKET_HEADER_SIZE + message.length);
  out.set(PACKET_MAGIC, 0);
  dv(out).setUint32(8, message.length, true);
  out.set(message, PACKET_HEADER_SIZE);
  return out;
}

export function hasPacketHeader(packet: Uint8Array): boolean {
  if (packet.length < PACKET_MAGIC.length) return false;
  for (let i = 0; i < PACKET_MAGIC.length; i++) if (packet[i] !== PACKET_MAGIC[i]) return false;
  return true;
}

/** Checks an IETF packet's header: "ROUGHTIM", and a length field that matches the datagram exactly.
 * Throws BAD_HEADER or TRUNCATED. */
export function checkPacket(packet: Uint8Array): void {
  if (packet.length > MAX_PACKET_SIZE) {
    fail("BAD_HEADER", `packet of ${packet.length} bytes is too large`);
  }
  if (packet.length < PACKET_HEADER_SIZE) fail("TRUNCATED", "packet shorter than its 12-byte header");
  if (!hasPacketHeader(packet)) fail("BAD_HEADER", "packet does not start with ROUGHTIM");
  const len = le32(packet, 8);
  if (len !== packet.length - PACKET_HEADER_SIZE) {
    fail(
      len > packet.length - PACKET_HEADER_SIZE ? "TRUNCATED" : "BAD_HEADER",
      `packet length field ${len} does not match the ${packet.length - PACKET_HEADER_SIZE} bytes that follow`,
    );
  }
}

/** Returns the message inside an IETF packet (see checkPacket). */
export function unwrapPacket(packet: Uint8Array): Uint8Array {
  checkPacket(packet);
  return packet.subarray(PACKET_HEADER_SIZE);
}

/** The value of `tag`, or MISSING_TAG; with `size`, also BAD_FIELD_LENGTH unless it has exactly that size. */
export function requireTag(msg: RtMessage, tag: number, size?: number, where = "message"): Uint8Array {
  const v = msg.get(tag);
  if (v === undefined) fail("MISSING_TAG", `${where} has no ${tagName(tag)}`);
  if (size !== undefined && v.length !== size) {
    fail("BAD_FIELD_LENGTH", `${where} ${tagName(tag)} is ${v.length} bytes, expected ${size}`);
  }
  return v;
}

export function readU32(b: Uint8Array, tag = 0): number {
  if (b.length !== 4) fail("BAD_FIELD_LENGTH", `${tagName(tag)} is ${b.length} bytes, expected 4`);
  return dv(b).getUint32(0, true);
}

export function readU64(b: Uint8Array, tag = 0): bigint {
  if (b.length !== 8) fail("BAD_FIELD_LENGTH", `${tagName(tag)} is ${b.length} bytes, expected 8`);
  return dv(b).getBigUint64(0, true);
}

export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  dv(b).setUint32(0, v >>> 0, true);
  return b;
}

export function u64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  dv(b).setBigUint64(0, BigInt.asUintN(64, v), true);
  return b;
}

/** A list of uint32 (VER in requests, VERS): non-empty, at most `max`, strictly ascending. */
export function readU32List(b: Uint8Array, tag: number, max: number): number[] {
  if (b.length === 0 || b.length % 4 !== 0) {
    fail("BAD_FIELD_LENGTH", `${tagName(tag)} of ${b.length} bytes is not a non-empty list of uint32`);
  }
  if (b.length / 4 > max) fail("BAD_VALUE", `${tagName(tag)} lists more than ${max} versions`);
  const view = dv(b);
  const out: number[] = [];
  for (let i = 0; i < b.length; i += 4) {
    const v = view.getUint32(i, true);
    if (out.length && v <= out[out.length - 1]) {
      fail("BAD_VALUE", `${tagName(tag)} is not strictly ascending`);
    }
    out.push(v);
  }
  return out;
}

export function u32List(values: readonly number[]): Uint8Array {
  const b = new Uint8Array(4 * values.length);
  values.forEach((v, i) => dv(b).setUint32(4 * i, v >>> 0, true));
  return b;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
