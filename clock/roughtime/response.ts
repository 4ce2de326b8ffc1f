/**
 * Server side of the exchange, pure: the delegation certificate (CERT) and signed replies for a batch of
 * requests under one Merkle root. The UDP loop in server.ts feeds it; tests call it directly.
 */
import {
  CONTEXT_DELEGATION_GOOGLE,
  CONTEXT_DELEGATION_IETF,
  CONTEXT_RESPONSE,
  MERKLE_LEAF_PREFIX,
  NONCE_SIZE_GOOGLE,
  NONCE_SIZE_IETF,
  TAG,
  TYPE_RESPONSE,
} from "./constants.ts";
import { sha512PrefixedInto, signWithContext } from "./crypto.ts";
import { fail } from "./errors.ts";
import { type HashFamily, MerkleLevels } from "./merkle.ts";
import type { RoughtimeRequest } from "./request.ts";
import { decodeMessage, encodeMessage, u32, u32List, u64, wrapPacket } from "./wire.ts";

export function delegationContext(family: HashFamily): Uint8Array {
  return family === "google" ? CONTEXT_DELEGATION_GOOGLE : CONTEXT_DELEGATION_IETF;
}

/** CERT = {SIG, DELE{PUBK, MINT, MAXT}}: the long-term key vouches for the online key between MINT and MAXT
 * (seconds for IETF, microseconds for Google). */
export function buildCert(
  family: HashFamily,
  longTermSeed: Uint8Array,
  onlinePublicKey: Uint8Array,
  mint: bigint,
  maxt: bigint,
): Uint8Array {
  const dele = encodeMessage([[TAG.PUBK, onlinePublicKey], [TAG.MINT, u64(mint)], [TAG.MAXT, u64(maxt)]]);
  const sig = signWithContext(longTermSeed, delegationContext(family), dele);
  return encodeMessage([[TAG.SIG, sig], [TAG.DELE, dele]]);
}

export interface BatchParams {
  family: HashFamily;
  /** VER to put in SREP (IETF), null for Google. */
  version: number | null;
  /** VERS: versions the server supports, ascending (IETF). */
  supported: readonly number[];
  midp: bigint;
  radi: number;
  onlineSeed: Uint8Array;
  cert: Uint8Array;
}

export interface SignedBatch {
  replies: Uint8Array[];
  /** The signed SREP, shared by every reply (tests and the benchmark look at it). */
  srep: Uint8Array;
}

/** The requests of one batch as positions in their buffers (the server fills one per batch and reuses it):
 * request i's Merkle leaf hashes `leafBuf[i][leafStart[i], leafEnd[i])`, and its nonce starts at
 * `nonceStart[i]` in `nonceBuf[i]`. */
export class BatchRequests {
  count = 0;
  leafBuf: Uint8Array[] = [];
  leafStart: Int32Array = new Int32Array(0);
  leafEnd: Int32Array = new Int32Array(0);
  nonceBuf: Uint8Array[] = [];
  nonceStart: Int32Array = new Int32Array(0);

  /** Empties the batch, with room for `n` requests. */
  reset(n: number): void {
    if (this.leafStart.length < n) {
      this.leafStart = new Int32Array(n);
      this.leafEnd = new Int32Array(n);
      this.nonceStart = new Int32Array(n);
    }
    this.count = 0;
    this.leafBuf.length = 0;
    this.nonceBuf.length = 0;
  }

  add(leaf: Uint8Array, leafStart: number, leafEnd: number, nonce: Uint8Array, nonceStart: number): void {
    const i = this.count++;
    this.leafBuf.push(leaf);
    this.leafStart[i] = leafStart;
    this.leafEnd[i] = leafEnd;
    this.nonceBuf.push(nonce);
    this.nonceStart[i] = nonceStart;
  }
}

/** Signs one SREP over the Merkle root of `requests` and returns one reply per request, in order. */
export function buildResponses(requests: RoughtimeRequest[], p: BatchParams): SignedBatch {
  if (requests.length === 0) fail("BAD_ARGUMENT", "empty batch");
  const batch = new BatchRequests();
  batch.reset(requests.length);
  for (const r of requests) {
    if (r.family !== p.family) fail("BAD_ARGUMENT", "a batch mixes request families");
    const leaf = p.family === "ietf" ? r.packet : r.nonce;
    batch.add(leaf, 0, leaf.length, r.nonce, 0);
  }
  return signBatch(batch, p);
}

/** One tree per family, reused: signBatch copies what it needs out of it before returning. */
const trees: Record<HashFamily, MerkleLevels> = {
  ietf: new MerkleLevels("ietf"),
  google: new MerkleLevels("google"),
};

/** The server's form of buildResponses: signs one SREP over the Merkle root of the batch and returns one
 * reply per request, in order, each a view of one buffer. Per request it only hashes the leaf and copies
 * NONC, PATH and INDX into a copy of the first reply: every reply of a batch has the same layout. */
export function signBatch(batch: BatchRequests, p: BatchParams): SignedBatch {
  const n = batch.count;
  if (n === 0) fail("BAD_ARGUMENT", "empty batch");
  const tree = trees[p.family];
  const size = tree.size;
  tree.reset(n);
  for (let i = 0; i < n; i++) {
    sha512PrefixedInto(
      MERKLE_LEAF_PREFIX,
      batch.leafBuf[i],
      batch.leafStart[i],
      batch.leafEnd[i],
      tree.buf,
      tree.leafAt(i),
      size,
    );
  }
  tree.build();
  const srepEntries: [number, Uint8Array][] = [
    [TAG.RADI, u32(p.radi)],
    [TAG.MIDP, u64(p.midp)],
    [TAG.ROOT, tree.buf.subarray(tree.rootAt(), tree.rootAt() + size)],
  ];
  if (p.family === "ietf") {
    if (p.version === null) fail("BAD_ARGUMENT", "an IETF batch needs a version");
    srepEntries.push([TAG.VER, u32(p.version)], [TAG.VERS, u32List(p.supported)]);
  }
  const srep = encodeMessage(srepEntries);
  const sig = signWithContext(p.onlineSeed, CONTEXT_RESPONSE, srep);
  // The first reply is encoded in full; the others are copies of it with their own NONC, PATH and INDX
  // (the same sizes throughout a batch) written over it.
  const nonceSize = p.family === "ietf" ? NONCE_SIZE_IETF : NONCE_SIZE_GOOGLE;
  const firstNonce = batch.nonceBuf[0].subarray(batch.nonceStart[0], batch.nonceStart[0] + nonceSize);
  if (firstNonce.length !== nonceSize) fail("BAD_ARGUMENT", `a ${p.family} nonce is ${nonceSize} bytes`);
  const path0 = new Uint8Array(tree.depth * size);
  tree.writePath(0, path0, 0);
  const entries: [number, Uint8Array][] = [
    [TAG.SIG, sig],
    [TAG.NONC, firstNonce],
    [TAG.PATH, path0],
    [TAG.SREP, srep],
    [TAG.CERT, p.cert],
    [TAG.INDX, u32(0)],
  ];
  if (p.family === "ietf") entries.push([TAG.TYPE, u32(TYPE_RESPONSE)]);
  const msg = encodeMessage(entries);
  const first = p.family === "ietf" ? wrapPacket(msg) : msg;
  const base = first.length - msg.length;
  const fields = decodeMessage(msg);
  const at = (tag: number) => base + (fields.get(tag) as Uint8Array).byteOffset - msg.byteOffset;
  const nonceAt = at(TAG.NONC);
  const pathAt = at(TAG.PATH);
  const indexAt = at(TAG.INDX);
  // All replies share one buffer (one allocation per batch), each a view of its own bytes.
  const len = first.length;
  const all = new Uint8Array(len * n);
  const view = new DataView(all.buffer);
  const replies: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    const start = i * len;
    all.set(first, start);
    if (i > 0) {
      const src = batch.nonceBuf[i];
      const from = batch.nonceStart[i];
      if (from + nonceSize > src.length) fail("BAD_ARGUMENT", `a ${p.family} nonce is ${nonceSize} bytes`);
      for (let j = 0; j < nonceSize; j++) all[start + nonceAt + j] = src[from + j];
      tree.writePath(i, all, start + pathAt);
      view.setUint32(start + indexAt, i, true);
    }
    replies.push(all.subarray(start, start + len));
  }
  return { replies, srep };
}
