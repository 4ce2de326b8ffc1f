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
import { parseRequest } from "./request.ts";
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

/** Checks a parsed report. Throws RoughtimeError BAD_REPORT (or the verification error, wrapped as
 * BAD_REPORT) when the report itself is invalid. */
export function checkReport(report: unknown): ReportVerdict {
  if (typeof report !== "object" || report === null || Array.isArray(report)) {
    bad("report is not a JSON object");
  }
  const list = (report as Record<string, unknown>).responses;
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
