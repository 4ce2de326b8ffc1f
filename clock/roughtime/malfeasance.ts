/**
 * Malfeasance reports (draft 19 section 8.4): a JSON object whose "responses" list holds, for each chained
 * exchange, base64 "rand", "publicKey", "request" and "response". Checking one: every response must verify
 * (a signature failure proves nothing about the server, so it makes the report invalid, not a proof), each
 * request's nonce must follow from the previous response and its rand, and then any pair (earlier i, later j)
 * with MIDP_i - RADI_i > MIDP_j + RADI_j proves that one of the two servers lied.
 * Google-Roughtime chains use the same shape (a 64-byte "rand", also accepted under the name "blind").
 */
import { RoughtimeError } from "./errors.ts";
import { fromBase64, toBase64 } from "./encoding.ts";
import { chainedNonce, randSize, type ServerOutcome } from "./chain.ts";
import { buildRequest, parseRequest } from "./request.ts";
import { NONCE_SIZE_GOOGLE } from "./constants.ts";
import { microsPerUnit, type VerifiedReply, verifyReply } from "./verify.ts";
import { bytesEqual } from "./wire.ts";

export interface MalfeasanceEntry {
  rand?: string;
  publicKey: string;
  request: string;
  response: string;
}

export interface MalfeasanceReport {
  responses: MalfeasanceEntry[];
}

/** Builds a report from a chain (failed links are left out: they are not part of the nonce chain). */
export function buildReport(outcomes: ServerOutcome[]): MalfeasanceReport {
  const responses: MalfeasanceEntry[] = [];
  for (const o of outcomes) {
    if (!o.ok) continue;
    const e: MalfeasanceEntry = {
      publicKey: toBase64(o.server.publicKey),
      request: toBase64(o.result.request),
      response: toBase64(o.result.response),
    };
    if (o.rand) e.rand = toBase64(o.rand);
    responses.push(e);
  }
  return { responses };
}

export interface Inconsistency {
  /** Indices in the chain: `earlier` claims a time after what `later` claims. */
  earlier: number;
  later: number;
  /** How far apart, in ms (lower bound of earlier minus upper bound of later). */
  gapMs: number;
}

export type ReportVerdict =
  | { kind: "consistent"; replies: VerifiedReply[] }
  | { kind: "malfeasance"; replies: VerifiedReply[]; inconsistencies: Inconsistency[] };

function bad(message: string): never {
  throw new RoughtimeError("BAD_REPORT", message);
}

function field(obj: Record<string, unknown>, name: string, i: number, optional = false): Uint8Array | null {
  const v = obj[name];
  if (v === undefined || v === null) {
    if (optional) return null;
    bad(`response ${i}: "${name}" is missing`);
  }
  if (typeof v !== "string") bad(`response ${i}: "${name}" is not a string`);
  try {
    return fromBase64(v);
  } catch {
    bad(`response ${i}: "${name}" is not base64`);
  }
}

/** Causality check over verified, chained replies (pure). */
export function findInconsistencies(replies: VerifiedReply[]): Inconsistency[] {
  const bounds = replies.map((r) => {
    const unit = microsPerUnit(r.version);
    return { lo: (r.midp - BigInt(r.radi)) * unit, hi: (r.midp + BigInt(r.radi)) * unit };
  });
  const out: Inconsistency[] = [];
  for (let i = 0; i < bounds.length; i++) {
    for (let j = i + 1; j < bounds.length; j++) {
      if (bounds[i].lo > bounds[j].hi) {
        out.push({ earlier: i, later: j, gapMs: Number(bounds[i].lo - bounds[j].hi) / 1000 });
      }
    }
  }
  return out;
}

/** Google's chain file ({"links": [{publicKeyType, serverPublicKey, nonceOrBlind, reply}]}) carries no
 * request packets: the first link holds the nonce itself and later ones the blind. A Google request is
 * determined by its nonce (its Merkle leaf is the nonce), so the requests are rebuilt here. */
function fromGoogleChain(links: unknown[]): Record<string, unknown>[] {
  if (links.length > 1024) bad("too many links");
  let previous: Uint8Array | null = null;
  return links.map((raw, i) => {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) bad(`link ${i} is not an object`);
    const link = raw as Record<string, unknown>;
    if (link.publicKeyType !== undefined && link.publicKeyType !== "ed25519") {
      bad(`link ${i}: key type is not ed25519`);
    }
    const nonceOrBlind = field(link, "nonceOrBlind", i) as Uint8Array;
    const reply = field(link, "reply", i) as Uint8Array;
    if (nonceOrBlind.length !== NONCE_SIZE_GOOGLE) bad(`link ${i}: nonceOrBlind is not 64 bytes`);
    const nonce: Uint8Array = previous ? chainedNonce("google", previous, nonceOrBlind) : nonceOrBlind;
    previous = reply;
    return {
      publicKey: link.serverPublicKey,
      request: toBase64(buildRequest({ version: "google", nonce }).packet),
      response: link.reply,
      ...(i > 0 ? { rand: toBase64(nonceOrBlind) } : {}),
    };
  });
}

/** Checks a parsed report: the draft's {"responses": [...]} or a Google {"links": [...]} chain. Throws
 * RoughtimeError BAD_REPORT when the report itself is invalid (a response that does not verify included). */
export function checkReport(report: unknown): ReportVerdict {
  if (typeof report !== "object" || report === null || Array.isArray(report)) {
    bad("report is not a JSON object");
  }
  const obj = report as Record<string, unknown>;
  const list = obj.responses === undefined && Array.isArray(obj.links)
    ? fromGoogleChain(obj.links)
    : obj.responses;
  if (!Array.isArray(list) || list.length === 0) bad(`"responses" is not a non-empty list`);
  if (list.length > 1024) bad("too many responses");
  const replies: VerifiedReply[] = [];
  let previous: Uint8Array | null = null;
  list.forEach((raw: unknown, i: number) => {
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) bad(`response ${i} is not an object`);
    const obj = raw as Record<string, unknown>;
    const publicKey = field(obj, "publicKey", i) as Uint8Array;
    const request = field(obj, "request", i) as Uint8Array;
    const response = field(obj, "response", i) as Uint8Array;
    const rand = field(obj, "rand", i, true) ?? field(obj, "blind", i, true);
    if (publicKey.length !== 32) bad(`response ${i}: publicKey is not 32 bytes`);
    let reply: VerifiedReply;
    try {
      reply = verifyReply(request, response, publicKey);
    } catch (e) {
      const code = e instanceof RoughtimeError ? e.code : "ERROR";
      bad(`response ${i} does not verify (${code}: ${e instanceof Error ? e.message : String(e)})`);
    }
    if (previous !== null) {
      if (rand === null) bad(`response ${i}: "rand" is required after the first response`);
      const family = parseRequest(request).family;
      if (rand.length !== randSize(family)) bad(`response ${i}: rand is not ${randSize(family)} bytes`);
      if (!bytesEqual(chainedNonce(family, previous, rand), reply.nonce)) {
        bad(`response ${i}: nonce is not derived from the previous response and rand (chain broken)`);
      }
    }
    replies.push(reply);
    previous = response;
  });
  const inconsistencies = findInconsistencies(replies);
  return inconsistencies.length
    ? { kind: "malfeasance", replies, inconsistencies }
    : { kind: "consistent", replies };
}
