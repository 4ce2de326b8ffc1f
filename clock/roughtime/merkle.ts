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
import { sha512 } from "./crypto.ts";
import { fail } from "./errors.ts";
import { bytesEqual } from "./wire.ts";

export type HashFamily = "ietf" | "google";

const LEAF = new Uint8Array([MERKLE_LEAF_PREFIX]);
const NODE = new Uint8Array([MERKLE_NODE_PREFIX]);

export function hashSize(family: HashFamily): number {
  return family === "ietf" ? HASH_SIZE_IETF : HASH_SIZE_GOOGLE;
}

function h(family: HashFamily, ...parts: Uint8Array[]): Uint8Array {
  const d = sha512(...parts);
  return family === "ietf" ? d.subarray(0, HASH_SIZE_IETF) : d;
}

/** Leaf value: IETF over the request packet (header included), Google over the nonce. */
export function leafHash(family: HashFamily, data: Uint8Array): Uint8Array {
  return h(family, LEAF, data);
}

export function nodeHash(family: HashFamily, left: Uint8Array, right: Uint8Array): Uint8Array {
  return h(family, NODE, left, right);
}

export interface MerkleTree {
  root: Uint8Array;
  /** paths[i] = siblings of leaf i from the bottom up, concatenated (the PATH value). */
  paths: Uint8Array[];
}

/** Builds a tree over `leaves` (already leaf-hashed), padded to a power of two with zero hashes. */
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
  let level = leaves.slice();
  while (level.length < width) level.push(new Uint8Array(size));
  const paths = leaves.map(() => new Uint8Array(depth * size));
  const index = leaves.map((_, i) => i);
  for (let d = 0; d < depth; d++) {
    leaves.forEach((_, i) => paths[i].set(level[index[i] ^ 1], d * size));
    const next: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(nodeHash(family, level[i], level[i + 1]));
    level = next;
    for (let i = 0; i < index.length; i++) index[i] >>>= 1;
  }
  return { root: level[0], paths };
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
