/**
 * SHA-512 (FIPS 180-4) for the Merkle tree, in WebAssembly emitted by this file at load time, so a busy
 * server hashes each request with one call and no allocation. Why not a library: node:crypto costs three
 * calls into the runtime and a native object per hash; hash-wasm's wrapper allocates a view, a subarray and
 * a copy of the digest per hash, which came to about a third of the time of a 65-byte Merkle node. The
 * module is small enough to read here: one function, the 80 rounds unrolled with the working variables
 * renamed instead of moved, the 16-word schedule kept in locals, big-endian words loaded and stored with
 * one byte shuffle per two words (SIMD). Round constants and initial values are derived, as the standard
 * defines them, from the cube and square roots of the first primes. Tested against node:crypto.
 * Internal to clock/roughtime (crypto.ts is its one user).
 */

/** Memory layout (one 64 KiB page): the digest, then the padded input. */
const OUT = 0;
const IN = 64;
const PAGE = 65536;
/** Longest input one call takes: the page less the digest and at most 2 blocks of padding. */
export const SHA512_MAX_INPUT = PAGE - IN - 256;

function firstPrimes(n: number): number[] {
  const out: number[] = [];
  for (let c = 2; out.length < n; c++) if (out.every((p) => c % p !== 0)) out.push(c);
  return out;
}

/** floor(x^(1/k)) for a non-negative BigInt, by Newton's method. */
function iroot(x: bigint, k: bigint): bigint {
  if (x < 2n) return x;
  let r = 1n << (BigInt(x.toString(2).length) / k + 1n);
  for (;;) {
    const next = ((k - 1n) * r + x / r ** (k - 1n)) / k;
    if (next >= r) return r;
    r = next;
  }
}

const MASK64 = (1n << 64n) - 1n;
/** K[t]: the first 64 bits of the fractional parts of the cube roots of the first 80 primes. */
const K = firstPrimes(80).map((p) => iroot(BigInt(p) << 192n, 3n) & MASK64);
/** H(0): the same for the square roots of the first 8 primes. */
const H0 = firstPrimes(8).map((p) => iroot(BigInt(p) << 128n, 2n) & MASK64);

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}

function sleb64(v: bigint): number[] {
  v = BigInt.asIntN(64, v);
  const out: number[] = [];
  for (;;) {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    if ((v === 0n && (b & 0x40) === 0) || (v === -1n && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

const op = {
  block: 0x02,
  loop: 0x03,
  end: 0x0b,
  brIf: 0x0d,
  br: 0x0c,
  get: 0x20,
  set: 0x21,
  tee: 0x22,
  i32Const: 0x41,
  i32Eqz: 0x45,
  i32Add: 0x6a,
  i32Sub: 0x6b,
  i64Const: 0x42,
  i64Add: 0x7c,
  i64And: 0x83,
  i64Or: 0x84,
  i64Xor: 0x85,
  i64ShrU: 0x88,
  i64Rotr: 0x8a,
  simd: 0xfd,
} as const;
/** SIMD sub-opcodes (after 0xfd). */
const simd = {
  load: 0x00,
  store: 0x0b,
  const: 0x0c,
  swizzle: 0x0e,
  splat: 0x12,
  extract: 0x1d,
  replace: 0x1e,
};
/** Reverses the bytes of each 64-bit lane: big-endian words to native and back. */
const BSWAP64 = [7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8];

/** The body of sha512(ptr: i32, blocks: i32, out: i32): hashes `blocks` padded 128-byte blocks at `ptr`
 * and stores the 64-byte digest at `out`. */
function body(): number[] {
  const c: number[] = [];
  const PTR = 0, BLOCKS = 1, DST = 2;
  const S = [3, 4, 5, 6, 7, 8, 9, 10]; // working variables a..h
  const SAVED = [11, 12, 13, 14, 15, 16, 17, 18]; // the state before the block
  const W = Array.from({ length: 16 }, (_, i) => 19 + i);
  const T1 = 35;
  const V = 36; // v128 scratch
  const get = (l: number) => c.push(op.get, ...uleb(l));
  const set = (l: number) => c.push(op.set, ...uleb(l));
  const i64 = (v: bigint) => c.push(op.i64Const, ...sleb64(v));
  const rotr = (l: number, n: number) => (get(l), i64(BigInt(n)), c.push(op.i64Rotr));
  const shr = (l: number, n: number) => (get(l), i64(BigInt(n)), c.push(op.i64ShrU));
  const sigma = (l: number, r1: number, r2: number, third: () => void) => {
    rotr(l, r1);
    rotr(l, r2);
    c.push(op.i64Xor);
    third();
    c.push(op.i64Xor);
  };
  const shuffle = () => c.push(op.simd, simd.const, ...BSWAP64, op.simd, simd.swizzle);

  H0.forEach((h, i) => (i64(h), set(S[i])));
  c.push(op.block, 0x40, op.loop, 0x40);
  get(BLOCKS);
  c.push(op.i32Eqz, op.brIf, 1);
  S.forEach((s, i) => (get(s), set(SAVED[i])));
  for (let j = 0; j < 8; j++) {
    get(PTR);
    c.push(op.simd, simd.load, 0, ...uleb(16 * j));
    shuffle();
    c.push(op.tee, ...uleb(V), op.simd, simd.extract, 0);
    set(W[2 * j]);
    get(V);
    c.push(op.simd, simd.extract, 1);
    set(W[2 * j + 1]);
  }
  let v = [...S];
  for (let t = 0; t < 80; t++) {
    const w = W[t % 16];
    if (t >= 16) {
      // W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], in a window of 16 locals.
      get(w);
      sigma(W[(t - 2) % 16], 19, 61, () => shr(W[(t - 2) % 16], 6));
      c.push(op.i64Add);
      get(W[(t - 7) % 16]);
      c.push(op.i64Add);
      sigma(W[(t - 15) % 16], 1, 8, () => shr(W[(t - 15) % 16], 7));
      c.push(op.i64Add);
      set(w);
    }
    const [a, b, cc, d, e, f, g, h] = v;
    // T1 = h + Σ1(e) + Ch(e, f, g) + K[t] + W[t], with Ch = g ^ (e & (f ^ g)).
    get(h);
    sigma(e, 14, 18, () => rotr(e, 41));
    c.push(op.i64Add);
    get(g), get(e), get(f), get(g);
    c.push(op.i64Xor, op.i64And, op.i64Xor, op.i64Add);
    i64(K[t]);
    c.push(op.i64Add);
    get(w);
    c.push(op.i64Add, op.tee, ...uleb(T1));
    // d += T1 (the next e); h = T1 + Σ0(a) + Maj(a, b, c) (the next a), Maj = (a & b) | (c & (a | b)).
    get(d);
    c.push(op.i64Add);
    set(d);
    get(T1);
    sigma(a, 28, 34, () => rotr(a, 39));
    c.push(op.i64Add);
    get(a), get(b);
    c.push(op.i64And);
    get(cc), get(a), get(b);
    c.push(op.i64Or, op.i64And, op.i64Or, op.i64Add);
    set(h);
    v = [h, a, b, cc, d, e, f, g];
  }
  // 80 rounds rename the variables back to where they started.
  S.forEach((s, i) => (get(s), get(SAVED[i]), c.push(op.i64Add), set(s)));
  get(PTR);
  c.push(op.i32Const, ...uleb(128), op.i32Add);
  set(PTR);
  get(BLOCKS);
  c.push(op.i32Const, 1, op.i32Sub);
  set(BLOCKS);
  c.push(op.br, 0, op.end, op.end);
  for (let j = 0; j < 4; j++) {
    get(DST);
    get(S[2 * j]);
    c.push(op.simd, simd.splat);
    get(S[2 * j + 1]);
    c.push(op.simd, simd.replace, 1);
    shuffle();
    c.push(op.simd, simd.store, 0, ...uleb(16 * j));
  }
  c.push(op.end);
  // Locals after the 3 parameters: 33 i64 (state, saved state, schedule, T1), then 1 v128.
  return [2, 33, 0x7e, 1, 0x7b, ...c];
}

function section(id: number, payload: number[]): number[] {
  return [id, ...uleb(payload.length), ...payload];
}

function name(s: string): number[] {
  return [...uleb(s.length), ...new TextEncoder().encode(s)];
}

function moduleBytes(): Uint8Array<ArrayBuffer> {
  const code = body();
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [1, 0x60, 3, 0x7f, 0x7f, 0x7f, 0]), // type: (i32, i32, i32) -> ()
    ...section(3, [1, 0]), // one function of that type
    ...section(5, [1, 0x00, 1]), // one memory of one page
    ...section(7, [2, ...name("memory"), 0x02, 0, ...name("sha512"), 0x00, 0]),
    ...section(10, [1, ...uleb(code.length), ...code]),
  ]);
}

const instance = new WebAssembly.Instance(new WebAssembly.Module(moduleBytes()));
const run = instance.exports.sha512 as (ptr: number, blocks: number, out: number) => void;
const mem = new Uint8Array((instance.exports.memory as WebAssembly.Memory).buffer);

/** Writes the first `size` bytes (at most 64) of SHA-512(prefix || src[from, to)) to `out` at `at`. `out`
 * may be `src`. Inputs up to SHA512_MAX_INPUT bytes. */
export function sha512PrefixedWasm(
  prefix: number,
  src: Uint8Array,
  from: number,
  to: number,
  out: Uint8Array,
  at: number,
  size: number,
): void {
  const n = 1 + to - from;
  if (!(from >= 0 && to <= src.length && n >= 1 && n <= SHA512_MAX_INPUT)) {
    throw new RangeError(`SHA-512 input of ${n} bytes out of range`);
  }
  mem[IN] = prefix;
  // Short inputs (Merkle nodes, nonces) are copied byte by byte: cheaper than a subarray for set().
  if (n <= 129) { for (let i = from; i < to; i++) mem[IN + 1 + i - from] = src[i]; }
  else mem.set(from === 0 && to === src.length ? src : src.subarray(from, to), IN + 1);
  // Padding: 0x80, zeros, then the length in bits as a 128-bit big-endian number.
  const blocks = Math.ceil((n + 17) / 128);
  const end = IN + 128 * blocks;
  mem[IN + n] = 0x80;
  mem.fill(0, IN + n + 1, end - 8);
  const bits = n * 8;
  const hi = Math.floor(bits / 2 ** 32);
  mem[end - 8] = hi >>> 24;
  mem[end - 7] = (hi >>> 16) & 0xff;
  mem[end - 6] = (hi >>> 8) & 0xff;
  mem[end - 5] = hi & 0xff;
  mem[end - 4] = bits >>> 24;
  mem[end - 3] = (bits >>> 16) & 0xff;
  mem[end - 2] = (bits >>> 8) & 0xff;
  mem[end - 1] = bits & 0xff;
  run(IN, blocks, OUT);
  for (let i = 0; i < size; i++) out[at + i] = mem[OUT + i];
}
