/**
 * Reply verification: everything RFC 10049 section 5.4 requires plus the checks roughtime.md lists
 * (nonce echo, offered version, downgrade, RADI bounds, PATH length, reply size). A function of its inputs
 * only: the request packet we sent, the reply packet and the server's long-term key, which is also exactly
 * what a malfeasance report carries. (The one piece of state it uses, the memo of verified delegations in
 * delegation_cache.ts, can skip a repeated signature check but never change an answer.) Signatures are checked over the raw bytes before their contents are parsed,
 * so a flipped bit in a signed field is always reported as a signature failure.
 */
import type { RoughtimeVersion } from "../types.ts";
import {
  CONTEXT_RESPONSE,
  MAX_RADIUS_MS,
  MAX_VERSIONS,
  SIGNATURE_SIZE,
  TAG,
  TYPE_RESPONSE,
  VERSION_PREFERENCE,
} from "./constants.ts";
import { verifyWithContext } from "./crypto.ts";
import { delegationVerified } from "./delegation_cache.ts";
import { fail } from "./errors.ts";
import { hashSize, leafHash, verifyPath } from "./merkle.ts";
import { parseRequest, type RoughtimeRequest, versionName } from "./request.ts";
import {
  bytesEqual,
  decodeMessage,
  readU32,
  readU32List,
  readU64,
  requireTag,
  unwrapPacket,
} from "./wire.ts";

export interface VerifiedReply {
  version: RoughtimeVersion;
  /** VER from SREP, null for Google. */
  versionNumber: number | null;
  /** Raw values in the version's unit (IETF seconds, Google microseconds). */
  midp: bigint;
  radi: number;
  mint: bigint;
  maxt: bigint;
  /** MIDP and RADI in milliseconds. */
  midpointMs: number;
  radiusMs: number;
  onlineKey: Uint8Array;
  index: number;
  pathLength: number;
  nonce: Uint8Array;
}

/** Microseconds per unit of MIDP/RADI for a family: the common unit for comparing replies. */
export function microsPerUnit(version: RoughtimeVersion): bigint {
  return version === "google" ? 1n : 1_000_000n;
}

/** The best version in `offered` that the server also lists, by our preference (RFC first). */
function bestMutual(offered: number[], serverVersions: number[]): number | null {
  for (const v of VERSION_PREFERENCE) if (offered.includes(v) && serverVersions.includes(v)) return v;
  return null;
}

export { clearDelegationCache } from "./delegation_cache.ts";

export interface VerifyOptions {
  /** How the exchange travelled. Over UDP (the default) a reply larger than its request is refused, as a
   * server must never amplify (RFC 10049 section 9.7); over TCP there is nothing to amplify and an unpadded
   * request legitimately gets a larger reply. */
  transport?: "udp" | "tcp";
}

/** Verifies `response` as the answer to `request` from the server whose long-term key is `publicKey`.
 * Throws a RoughtimeError naming the first check that failed. */
export function verifyReply(
  request: Uint8Array,
  response: Uint8Array,
  publicKey: Uint8Array,
  opts: VerifyOptions = {},
): VerifiedReply {
  if (opts.transport !== "tcp" && response.length > request.length) {
    fail(
      "RESPONSE_TOO_LARGE",
      `reply of ${response.length} bytes is larger than the ${request.length}-byte request`,
    );
  }
  const req: RoughtimeRequest = parseRequest(request);
  const family = req.family;
  const msg = decodeMessage(family === "ietf" ? unwrapPacket(response) : response);

  const typeBytes = msg.get(TAG.TYPE);
  if (typeBytes !== undefined && readU32(typeBytes, TAG.TYPE) !== TYPE_RESPONSE) {
    fail("BAD_TYPE", "reply TYPE is not 1 (response)");
  }

  // Delegation: the long-term key signs DELE.
  const cert = decodeMessage(requireTag(msg, TAG.CERT, undefined, "reply"));
  const deleBytes = requireTag(cert, TAG.DELE, undefined, "CERT");
  const deleSig = requireTag(cert, TAG.SIG, SIGNATURE_SIZE, "CERT");
  if (!delegationVerified(publicKey, family, deleBytes, deleSig)) {
    fail("BAD_DELEGATION_SIGNATURE", "DELE is not signed by the server's long-term key");
  }
  const dele = decodeMessage(deleBytes);
  const onlineKey = requireTag(dele, TAG.PUBK, 32, "DELE");
  const mint = readU64(requireTag(dele, TAG.MINT, undefined, "DELE"), TAG.MINT);
  const maxt = readU64(requireTag(dele, TAG.MAXT, undefined, "DELE"), TAG.MAXT);

  // The online key signs SREP.
  const srepBytes = requireTag(msg, TAG.SREP, undefined, "reply");
  const sig = requireTag(msg, TAG.SIG, SIGNATURE_SIZE, "reply");
  if (!verifyWithContext(onlineKey, CONTEXT_RESPONSE, srepBytes, sig)) {
    fail("BAD_SIGNATURE", "SREP is not signed by the delegated key");
  }
  const srep = decodeMessage(srepBytes);
  const radi = readU32(requireTag(srep, TAG.RADI, undefined, "SREP"), TAG.RADI);
  const midp = readU64(requireTag(srep, TAG.MIDP, undefined, "SREP"), TAG.MIDP);
  const root = requireTag(srep, TAG.ROOT, hashSize(family), "SREP");

  let versionNumber: number | null = null;
  if (family === "ietf") {
    versionNumber = readU32(requireTag(srep, TAG.VER, undefined, "SREP"), TAG.VER);
    if (!req.offered.includes(versionNumber)) {
      fail(
        "VERSION_NOT_OFFERED",
        `server answered with version 0x${versionNumber.toString(16)}, not offered`,
      );
    }
    const versBytes = srep.get(TAG.VERS);
    if (versBytes !== undefined) {
      const vers = readU32List(versBytes, TAG.VERS, MAX_VERSIONS);
      if (!vers.includes(versionNumber)) {
        fail("BAD_VALUE", "SREP VERS does not list the VER it answered with");
      }
      const best = bestMutual(req.offered, vers);
      if (best !== null && best !== versionNumber) {
        fail(
          "DOWNGRADE",
          `server chose 0x${versionNumber.toString(16)} though both support 0x${best.toString(16)}`,
        );
      }
    }
  }
  // Throws BAD_VALUE for a VER we cannot name (only reachable when the request offered it).
  const version = versionName(versionNumber);

  const nonc = msg.get(TAG.NONC);
  if (family === "ietf" && nonc === undefined) fail("MISSING_TAG", "reply has no NONC");
  if (nonc !== undefined && !bytesEqual(nonc, req.nonce)) {
    fail("NONCE_MISMATCH", "reply NONC is not our nonce");
  }

  if (midp < mint || midp > maxt) fail("MIDP_OUT_OF_RANGE", "MIDP is outside the delegation's [MINT, MAXT]");

  const unit = Number(microsPerUnit(version));
  const radiusMs = (radi * unit) / 1000;
  if (radi === 0) fail("BAD_RADIUS", "RADI is 0");
  if (radiusMs > MAX_RADIUS_MS) fail("RADIUS_TOO_LARGE", `RADI of ${radiusMs} ms is absurd`);

  const path = requireTag(msg, TAG.PATH, undefined, "reply");
  const index = readU32(requireTag(msg, TAG.INDX, undefined, "reply"), TAG.INDX);
  verifyPath(family, leafHash(family, family === "ietf" ? req.packet : req.nonce), index, path, root);

  return {
    version,
    versionNumber,
    midp,
    radi,
    mint,
    maxt,
    midpointMs: (Number(midp) * unit) / 1000,
    radiusMs,
    onlineKey,
    index,
    pathLength: path.length / hashSize(family),
    nonce: req.nonce,
  };
}
