/**
 * Server side of the exchange, pure: the delegation certificate (CERT) and signed replies for a batch of
 * requests under one Merkle root. The UDP loop in server.ts feeds it; tests call it directly.
 */
import {
  CONTEXT_DELEGATION_GOOGLE,
  CONTEXT_DELEGATION_IETF,
  CONTEXT_RESPONSE,
  TAG,
  TYPE_RESPONSE,
} from "./constants.ts";
import { signWithContext } from "./crypto.ts";
import { fail } from "./errors.ts";
import { buildTree, type HashFamily, leafHash } from "./merkle.ts";
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

/** Signs one SREP over the Merkle root of `requests` and returns one reply per request, in order. */
export function buildResponses(requests: RoughtimeRequest[], p: BatchParams): SignedBatch {
  if (requests.length === 0) fail("BAD_ARGUMENT", "empty batch");
  for (const r of requests) {
    if (r.family !== p.family) fail("BAD_ARGUMENT", "a batch mixes request families");
  }
  const leaves = requests.map((r) => leafHash(p.family, p.family === "ietf" ? r.packet : r.nonce));
  const tree = buildTree(p.family, leaves);
  const srepEntries: [number, Uint8Array][] = [
    [TAG.RADI, u32(p.radi)],
    [TAG.MIDP, u64(p.midp)],
    [TAG.ROOT, tree.root],
  ];
  if (p.family === "ietf") {
    if (p.version === null) fail("BAD_ARGUMENT", "an IETF batch needs a version");
    srepEntries.push([TAG.VER, u32(p.version)], [TAG.VERS, u32List(p.supported)]);
  }
  const srep = encodeMessage(srepEntries);
  const sig = signWithContext(p.onlineSeed, CONTEXT_RESPONSE, srep);
  // Every reply of a batch has the same layout and differs only in NONC, PATH and INDX (all the same size
  // within a batch): encode the first one, then copy it and overwrite those three values for the others.
  const entries: [number, Uint8Array][] = [
    [TAG.SIG, sig],
    [TAG.NONC, requests[0].nonce],
    [TAG.PATH, tree.paths[0]],
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
  const all = new Uint8Array(len * requests.length);
  const view = new DataView(all.buffer);
  const replies = requests.map((r, i) => {
    const at = i * len;
    all.set(first, at);
    if (i > 0) {
      all.set(r.nonce, at + nonceAt);
      all.set(tree.paths[i], at + pathAt);
      view.setUint32(at + indexAt, i, true);
    }
    return all.subarray(at, at + len);
  });
  return { replies, srep };
}
