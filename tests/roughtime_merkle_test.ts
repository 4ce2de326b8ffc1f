/**
 * The server's Merkle tree (flat levels, padding subtrees not rehashed) equals a naive tree that hashes every
 * node of the zero-padded power-of-two tree, for both families and every batch size up to 64; and every path
 * it hands out walks back to the root.
 */
import assert from "node:assert/strict";
import {
  buildTree,
  type HashFamily,
  hashSize,
  leafHash,
  nodeHash,
  verifyPath,
} from "../clock/roughtime/merkle.ts";
import { randomBytes } from "../clock/roughtime/crypto.ts";

/** The textbook construction: pad to a power of two with zero hashes, hash every pair, level by level. */
function naiveTree(family: HashFamily, leaves: Uint8Array[]): { root: Uint8Array; paths: Uint8Array[] } {
  const size = hashSize(family);
  let width = 1;
  while (width < leaves.length) width *= 2;
  let level = [...leaves];
  while (level.length < width) level.push(new Uint8Array(size));
  const paths: Uint8Array[][] = leaves.map(() => []);
  const index = leaves.map((_, i) => i);
  while (level.length > 1) {
    leaves.forEach((_, i) => paths[i].push(level[index[i] ^ 1]));
    const next: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(nodeHash(family, level[i], level[i + 1]));
    level = next;
    index.forEach((v, i) => (index[i] = v >>> 1));
  }
  return {
    root: level[0],
    paths: paths.map((p) => {
      const out = new Uint8Array(p.length * size);
      p.forEach((h, d) => out.set(h, d * size));
      return out;
    }),
  };
}

for (const family of ["ietf", "google"] as const) {
  Deno.test(`merkle ${family}: the tree and every path equal the naive construction, batches of 1-64`, () => {
    for (let n = 1; n <= 64; n++) {
      const leaves = Array.from(
        { length: n },
        () => leafHash(family, randomBytes(family === "ietf" ? 1024 : 64)),
      );
      const fast = buildTree(family, leaves);
      const slow = naiveTree(family, leaves);
      assert.deepEqual(fast.root, slow.root, `root of ${n}`);
      for (let i = 0; i < n; i++) {
        assert.deepEqual(fast.paths[i], slow.paths[i], `path ${i} of ${n}`);
        verifyPath(family, leaves[i], i, fast.paths[i], fast.root);
      }
    }
  });
}

Deno.test("merkle: a leaf of the wrong size is refused", () => {
  assert.throws(() => buildTree("ietf", [new Uint8Array(64)]), /leaf hash is 32 bytes/);
});
