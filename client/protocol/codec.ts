/**
 * Framing: a 4-byte big-endian length, then that many bytes. Pure: no sockets here. The decoder checks the
 * length prefix before it buffers a byte of the body, so a hostile prefix (0, or 2^32-1) costs nothing.
 */
import { LENGTH_PREFIX_BYTES, MAX_FRAME_BYTES } from "./constants.ts";
import { ProtocolError } from "./errors.ts";

/** Prefixes `body` with its length. Throws ProtocolError FRAME_TOO_LARGE / EMPTY_FRAME. */
export function frameBytes(body: Uint8Array, maxFrameBytes = MAX_FRAME_BYTES): Uint8Array {
  if (body.length === 0) throw new ProtocolError("EMPTY_FRAME", "a frame body cannot be empty");
  if (body.length > maxFrameBytes) {
    throw new ProtocolError("FRAME_TOO_LARGE", `frame of ${body.length} bytes exceeds ${maxFrameBytes}`);
  }
  const out = new Uint8Array(LENGTH_PREFIX_BYTES + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, LENGTH_PREFIX_BYTES);
  return out;
}

/** Splits a byte stream into frame bodies. Holds at most one frame's worth of bytes (plus one chunk). */
export class FrameDecoder {
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #need: number | null = null;
  #failed: ProtocolError | null = null;

  readonly #maxFrameBytes: number;

  constructor(maxFrameBytes = MAX_FRAME_BYTES) {
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** Bytes held that do not yet form a complete frame. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Feeds bytes; returns the complete frame bodies. Throws ProtocolError EMPTY_FRAME or FRAME_TOO_LARGE
   * as soon as a bad length prefix is seen (and keeps throwing: the stream cannot be resynchronised). */
  push(chunk: Uint8Array): Uint8Array[] {
    this.append(chunk);
    const out: Uint8Array[] = [];
    for (let b = this.next(); b; b = this.next()) out.push(b);
    return out;
  }

  /** Buffers bytes without decoding them (a reader that pulls frames one at a time with next()). The chunk
   * is kept, not copied: the caller must not change it afterwards (a socket hands out a new one per read). */
  append(chunk: Uint8Array): void {
    if (this.#failed) throw this.#failed;
    if (chunk.length) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
  }

  /** The next complete frame body, or null when more bytes are needed. Throws like push(). */
  next(): Uint8Array | null {
    if (this.#failed) throw this.#failed;
    if (this.#need === null) {
      if (this.#buffered < LENGTH_PREFIX_BYTES) return null;
      const prefix = this.#take(LENGTH_PREFIX_BYTES);
      const n = ((prefix[0] << 24) | (prefix[1] << 16) | (prefix[2] << 8) | prefix[3]) >>> 0;
      if (n === 0) this.#fail(new ProtocolError("EMPTY_FRAME", "frame length 0"));
      if (n > this.#maxFrameBytes) {
        this.#fail(new ProtocolError("FRAME_TOO_LARGE", `frame length ${n} exceeds ${this.#maxFrameBytes}`));
      }
      this.#need = n;
    }
    if (this.#buffered < this.#need) return null;
    const body = this.#take(this.#need);
    this.#need = null;
    return body;
  }

  /** Called at end of stream: a partial frame is an error (its bytes are dropped, nothing is delivered). */
  end(): void {
    if (this.#failed) return;
    if (this.#buffered > 0 || this.#need !== null) {
      this.#chunks = [];
      this.#buffered = 0;
      this.#fail(new ProtocolError("TRUNCATED", "stream ended inside a frame"));
    }
  }

  #fail(e: ProtocolError): never {
    this.#failed = e;
    this.#chunks = [];
    this.#buffered = 0;
    throw e;
  }

  /** The next n buffered bytes. When they lie in one chunk (the usual case: a socket read holds many whole
   * frames) they are a view of it, not a copy: chunks appended must not be changed afterwards. */
  #take(n: number): Uint8Array {
    const first = this.#chunks[0];
    if (first.length >= n) {
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, n - off);
      out.set(c.subarray(0, k), off);
      off += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    this.#buffered -= n;
    return out;
  }
}
