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
import { sha512Prefixed } from "./crypto.ts";
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

/** Builds a tree over `leaves` (already leaf-hashed), padded to a power of two with zero hashes. Each level
 * lives in one flat buffer and the paths in another (a server builds one tree per batch, under load many a
 * second: few allocations). */
export function buildTree(family: HashFamily, leaves: Uint8Array[]): MerkleTree {
  if (leaves.length === 0) fail("BAD_ARGUMENT", "a Merkle tree needs at least one leaf");
  const size = hashSize(family);
  let width = 1;
  let depth = 0;
  while (width < leaves.length) {
    width *= 2;
    depth++;
  }
  if (depth > MAX_PATH_HASHES) fail("BAD_ARGUMENT", "batch too large for a Merkle path");
  let level = new Uint8Array(width * size);
  leaves.forEach((leaf, i) => {
    if (leaf.length !== size) fail("BAD_ARGUMENT", `a ${family} leaf hash is ${size} bytes`);
    level.set(leaf, i * size);
  });
  const n = leaves.length;
  const pathBytes = depth * size;
  const flat = new Uint8Array(n * pathBytes);
  // Nodes at or past `real` on a level cover padding only; they all equal that level's padding hash, so
  // only the nodes over real leaves are hashed (a batch of 40 takes 41 hashes, not 63).
  let real = n;
  // Siblings are copied word by word (every offset is a multiple of 32 bytes): cheaper than a subarray and
  // a set per hash, six per request in a full batch.
  const words = size / 4;
  const pathWords = pathBytes / 4;
  const flat32 = new Uint32Array(flat.buffer);
  for (let d = 0, w = width; d < depth; d++, w /= 2) {
    const level32 = new Uint32Array(level.buffer);
    for (let i = 0; i < n; i++) {
      const from = ((i >>> d) ^ 1) * words;
      const to = i * pathWords + d * words;
      for (let j = 0; j < words; j++) flat32[to + j] = level32[from + j];
    }
    const next = new Uint8Array((w / 2) * size);
    const nextReal = Math.ceil(real / 2);
    for (let k = 0; k < nextReal; k++) {
      // The two children are adjacent in the level: hash 0x01 || left || right straight from it.
      const digest = sha512Prefixed(MERKLE_NODE_PREFIX, level.subarray(2 * k * size, (2 * k + 2) * size));
      next.set(digest.subarray(0, size), k * size);
    }
    const pad = paddingHash(family, d + 1);
    for (let k = nextReal; k < w / 2; k++) next.set(pad, k * size);
    level = next;
    real = nextReal;
  }
  const paths = Array.from({ length: n }, (_, i) => flat.subarray(i * pathBytes, (i + 1) * pathBytes));
  return { root: level, paths };
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
