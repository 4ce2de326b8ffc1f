/**
 * The Merkle tree that lets one signature cover a batch of requests (RFC 10049 section 5.3).
 * IETF hashes are SHA-512 truncated to 32 bytes over the whole request packet; Google hashes are the full
 * SHA-512 over the nonce. Walking up with INDX: bit 0 clear means we are the left child, so
 * h = H(0x01 || h || sibling); set means h = H(0x01 || sibling || h). Every implementation and draft 16+
 * agree on this (drafts 09-15 printed it the other way round; single-leaf trees hide the difference).
 */
import {
  HASH_SIZE_GOOGLE,
  HASH_SIZE_IETF,
  MAX_PATH_HASHES,
  MERKLE_LEAF_PREFIX,
  MERKLE_NODE_PREFIX,
} from "./constants.ts";
import { sha512Prefixed, sha512PrefixedInto } from "./crypto.ts";
import { fail } from "./errors.ts";
import { bytesEqual } from "./wire.ts";

export type HashFamily = "ietf" | "google";

export function hashSize(family: HashFamily): number {
  return family === "ietf" ? HASH_SIZE_IETF : HASH_SIZE_GOOGLE;
}

function truncate(family: HashFamily, d: Uint8Array): Uint8Array {
  return family === "ietf" ? d.subarray(0, HASH_SIZE_IETF) : d;
}

/** Leaf value: IETF over the request packet (header included), Google over the nonce. */
export function leafHash(family: HashFamily, data: Uint8Array): Uint8Array {
  return truncate(family, sha512Prefixed(MERKLE_LEAF_PREFIX, data));
}

export function nodeHash(family: HashFamily, left: Uint8Array, right: Uint8Array): Uint8Array {
  return truncate(family, sha512Prefixed(MERKLE_NODE_PREFIX, left, right));
}

export interface MerkleTree {
  root: Uint8Array;
  /** paths[i] = siblings of leaf i from the bottom up, concatenated (the PATH value). */
  paths: Uint8Array[];
}

/** paddingHashes[family][d]: the value of a node d levels above the zero leaves that pad a tree. */
const paddingHashes: Record<HashFamily, Uint8Array[]> = { ietf: [], google: [] };

function paddingHash(family: HashFamily, d: number): Uint8Array {
  const known = paddingHashes[family];
  if (known.length === 0) known.push(new Uint8Array(hashSize(family)));
  while (known.length <= d) {
    const below = known[known.length - 1];
    known.push(nodeHash(family, below, below));
  }
  return known[d];
}

/** A Merkle tree kept as its levels in one buffer, reused from batch to batch: the server hashes each leaf
 * straight into its slot, builds the levels above, and copies each PATH from them into its reply, with no
 * allocation per request. Level d holds `width >> d` nodes; nodes over padding only hold that level's
 * padding hash and are not hashed (a batch of 40 takes 41 hashes, not 63). */
export class MerkleLevels {
  readonly family: HashFamily;
  readonly size: number;
  buf: Uint8Array = new Uint8Array(0);
  /** Leaves in the current tree, its padded width and depth (= hashes per PATH). */
  count = 0;
  width = 1;
  depth = 0;
  /** levelAt[d] = where level d starts in `buf`. */
  private levelAt: number[] = [0];

  constructor(family: HashFamily) {
    this.family = family;
    this.size = hashSize(family);
  }

  /** Starts a tree of `n` leaves (1 to 2^MAX_PATH_HASHES); the caller then fills each slot at leafAt(i). */
  reset(n: number): void {
    if (!(n >= 1)) fail("BAD_ARGUMENT", "a Merkle tree needs at least one leaf");
    let width = 1;
    let depth = 0;
    while (width < n) {
      width *= 2;
      depth++;
    }
    if (depth > MAX_PATH_HASHES) fail("BAD_ARGUMENT", "batch too large for a Merkle path");
    if (this.buf.length < 2 * width * this.size) this.buf = new Uint8Array(2 * width * this.size);
    this.count = n;
    this.width = width;
    this.depth = depth;
    this.levelAt.length = 0;
    for (let d = 0, at = 0, w = width; d <= depth; d++, w /= 2) {
      this.levelAt.push(at);
      at += w * this.size;
    }
  }

  leafAt(i: number): number {
    return i * this.size;
  }

  /** Hashes the levels above the leaves put in place since reset. */
  build(): void {
    const size = this.size;
    const buf = this.buf;
    let real = this.count;
    const zero = paddingHash(this.family, 0);
    for (let k = real; k < this.width; k++) buf.set(zero, this.leafAt(k));
    for (let d = 0, w = this.width; d < this.depth; d++, w /= 2) {
      const below = this.levelAt[d];
      const here = this.levelAt[d + 1];
      const nextReal = Math.ceil(real / 2);
      // The two children are adjacent in the level below: hash 0x01 || left || right straight from it.
      for (let k = 0; k < nextReal; k++) {
        const from = below + 2 * k * size;
        sha512PrefixedInto(MERKLE_NODE_PREFIX, buf, from, from + 2 * size, buf, here + k * size, size);
      }
      const pad = paddingHash(this.family, d + 1);
      for (let k = nextReal; k < w / 2; k++) buf.set(pad, here + k * size);
      real = nextReal;
    }
  }

  rootAt(): number {
    return this.levelAt[this.depth];
  }

  /** Writes leaf i's PATH (its siblings from the bottom up, depth * size bytes) to `out` at `at`. */
  writePath(i: number, out: Uint8Array, at: number): void {
    const size = this.size;
    const buf = this.buf;
    for (let d = 0; d < this.depth; d++) {
      const from = this.levelAt[d] + ((i >>> d) ^ 1) * size;
      const to = at + d * size;
      for (let j = 0; j < size; j++) out[to + j] = buf[from + j];
    }
  }
}

/** Builds a tree over `leaves` (already leaf-hashed), padded to a power of two with zero hashes. */
export function buildTree(family: HashFamily, leaves: Uint8Array[]): MerkleTree {
  const tree = new MerkleLevels(family);
  tree.reset(leaves.length);
  leaves.forEach((leaf, i) => {
    if (leaf.length !== tree.size) fail("BAD_ARGUMENT", `a ${family} leaf hash is ${tree.size} bytes`);
    tree.buf.set(leaf, tree.leafAt(i));
  });
  tree.build();
  const root = tree.buf.slice(tree.rootAt(), tree.rootAt() + tree.size);
  const paths = leaves.map((_, i) => {
    const path = new Uint8Array(tree.depth * tree.size);
    tree.writePath(i, path, 0);
    return path;
  });
  return { root, paths };
}

/** Checks that `leaf` at `index` with sibling list `path` hashes up to `root`.
 * Throws BAD_PATH, PATH_TOO_LONG, BAD_INDEX or MERKLE_MISMATCH. */
export function verifyPath(
  family: HashFamily,
  leaf: Uint8Array,
  index: number,
  path: Uint8Array,
  root: Uint8Array,
): void {
  const size = hashSize(family);
  if (path.length % size !== 0) fail("BAD_PATH", `PATH of ${path.length} bytes is not a multiple of ${size}`);
  const n = path.length / size;
  if (n > MAX_PATH_HASHES) fail("PATH_TOO_LONG", `PATH has ${n} hashes, more than ${MAX_PATH_HASHES}`);
  // INDX must be fully consumed by the path: any bit above the tree height points outside the tree.
  if (n < 32 && index >>> n !== 0) {
    fail("BAD_INDEX", `INDX ${index} is out of range for a PATH of ${n} hashes`);
  }
  let cur = leaf;
  let idx = index;
  for (let i = 0; i < n; i++) {
    const sibling = path.subarray(i * size, (i + 1) * size);
    cur = (idx & 1) === 0 ? nodeHash(family, cur, sibling) : nodeHash(family, sibling, cur);
    idx >>>= 1;
  }
  if (!bytesEqual(cur, root)) fail("MERKLE_MISMATCH", "the Merkle path does not lead to ROOT");
}
