/**
 * Read-only support for IETF drafts 01-11 (VER 0x80000001-0x8000000b), enough to verify cloudflare's
 * draft-08 and draft-11 test data: these drafts used the Google delegation context ("--"), a Merkle leaf over
 * the 32-byte nonce (not the request packet), VER at the top level of the reply, and timestamps whose
 * encoding changed between drafts (MJD-based in some), so no time is derived here: the raw fields are
 * returned and nothing else in the project uses them. Our client never offers these versions.
 */
import {
  CONTEXT_DELEGATION_GOOGLE,
  CONTEXT_RESPONSE,
  LEGACY_VERSION_FIRST,
  LEGACY_VERSION_LAST,
  MAX_VERSIONS,
  NONCE_SIZE_IETF,
  SIGNATURE_SIZE,
  TAG,
} from "./constants.ts";
import { verifyWithContext } from "./crypto.ts";
import { fail } from "./errors.ts";
import { leafHash, verifyPath } from "./merkle.ts";
import {
  bytesEqual,
  decodeMessage,
  readU32,
  readU32List,
  readU64,
  requireTag,
  unwrapPacket,
} from "./wire.ts";

export interface LegacyReply {
  versionNumber: number;
  midp: bigint;
  radi: number;
  mint: bigint;
  maxt: bigint;
}

/** Verifies a drafts 01-11 reply: delegation, signature, MINT <= MIDP <= MAXT, nonce, offered version and
 * the Merkle path. Throws RoughtimeError with the same codes as verifyReply. */
export function verifyLegacyReply(
  request: Uint8Array,
  response: Uint8Array,
  publicKey: Uint8Array,
): LegacyReply {
  if (response.length > request.length) fail("RESPONSE_TOO_LARGE", "reply larger than the request");
  const req = decodeMessage(unwrapPacket(request));
  const offered = readU32List(requireTag(req, TAG.VER, undefined, "request"), TAG.VER, MAX_VERSIONS);
  const nonce = requireTag(req, TAG.NONC, NONCE_SIZE_IETF, "request");
  const msg = decodeMessage(unwrapPacket(response));
  const versionNumber = readU32(requireTag(msg, TAG.VER, undefined, "reply"), TAG.VER);
  if (
    versionNumber < LEGACY_VERSION_FIRST || versionNumber > LEGACY_VERSION_LAST ||
    !offered.includes(versionNumber)
  ) {
    fail(
      "VERSION_NOT_OFFERED",
      `reply version 0x${versionNumber.toString(16)} is not an offered draft 01-11`,
    );
  }
  const cert = decodeMessage(requireTag(msg, TAG.CERT, undefined, "reply"));
  const dele = requireTag(cert, TAG.DELE, undefined, "CERT");
  if (
    !verifyWithContext(
      publicKey,
      CONTEXT_DELEGATION_GOOGLE,
      dele,
      requireTag(cert, TAG.SIG, SIGNATURE_SIZE, "CERT"),
    )
  ) {
    fail("BAD_DELEGATION_SIGNATURE", "DELE is not signed by the server's long-term key");
  }
  const d = decodeMessage(dele);
  const srepBytes = requireTag(msg, TAG.SREP, undefined, "reply");
  if (
    !verifyWithContext(
      requireTag(d, TAG.PUBK, 32, "DELE"),
      CONTEXT_RESPONSE,
      srepBytes,
      requireTag(msg, TAG.SIG, SIGNATURE_SIZE, "reply"),
    )
  ) {
    fail("BAD_SIGNATURE", "SREP is not signed by the delegated key");
  }
  const srep = decodeMessage(srepBytes);
  const midp = readU64(requireTag(srep, TAG.MIDP, undefined, "SREP"), TAG.MIDP);
  const radi = readU32(requireTag(srep, TAG.RADI, undefined, "SREP"), TAG.RADI);
  const mint = readU64(requireTag(d, TAG.MINT, undefined, "DELE"), TAG.MINT);
  const maxt = readU64(requireTag(d, TAG.MAXT, undefined, "DELE"), TAG.MAXT);
  const nonc = msg.get(TAG.NONC);
  if (nonc !== undefined && !bytesEqual(nonc, nonce)) fail("NONCE_MISMATCH", "reply NONC is not our nonce");
  if (midp < mint || midp > maxt) fail("MIDP_OUT_OF_RANGE", "MIDP is outside [MINT, MAXT]");
  if (radi === 0) fail("BAD_RADIUS", "RADI is 0");
  const index = readU32(requireTag(msg, TAG.INDX, undefined, "reply"), TAG.INDX);
  verifyPath(
    "ietf",
    leafHash("ietf", nonce),
    index,
    requireTag(msg, TAG.PATH, undefined, "reply"),
    requireTag(srep, TAG.ROOT, 32, "SREP"),
  );
  return { versionNumber, midp, radi, mint, maxt };
}
