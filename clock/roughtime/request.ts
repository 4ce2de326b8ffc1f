/**
 * Building requests (client) and parsing them (server), for the three families. Pure: no I/O, no clock.
 */
import type { RoughtimeVersion } from "../types.ts";
import {
  MAX_VERSIONS,
  NONCE_SIZE_GOOGLE,
  NONCE_SIZE_IETF,
  PACKET_HEADER_SIZE,
  REQUEST_SIZE,
  SRV_PREFIX,
  TAG,
  TYPE_REQUEST,
  VERSION_DRAFT,
  VERSION_RFC,
} from "./constants.ts";
import { randomBytes, sha512 } from "./crypto.ts";
import { fail } from "./errors.ts";
import type { HashFamily } from "./merkle.ts";
import {
  decodeMessage,
  encodeMessage,
  hasPacketHeader,
  readU32,
  readU32List,
  requireTag,
  u32,
  u32List,
  unwrapPacket,
  wrapPacket,
} from "./wire.ts";

export interface RoughtimeRequest {
  family: HashFamily;
  /** The datagram as sent: what IETF Merkle leaves hash. */
  packet: Uint8Array;
  nonce: Uint8Array;
  /** VER list (IETF); empty for Google. */
  offered: number[];
  /** SRV value, when present. */
  srv: Uint8Array | null;
  /** TYPE value, or null when the tag is absent (drafts 12-13 clients). */
  type: number | null;
}

export function familyOf(version: RoughtimeVersion): HashFamily {
  return version === "google" ? "google" : "ietf";
}

export function nonceSize(family: HashFamily): number {
  return family === "ietf" ? NONCE_SIZE_IETF : NONCE_SIZE_GOOGLE;
}

/** The VER list a client offers: "rfc" asks for v1 only, "draft" for 0x8000000c, absent for both. */
export function offeredVersions(version: RoughtimeVersion | undefined): number[] {
  if (version === "google") return [];
  if (version === "rfc") return [VERSION_RFC];
  if (version === "draft") return [VERSION_DRAFT];
  return [VERSION_RFC, VERSION_DRAFT];
}

export function versionName(v: number | null): RoughtimeVersion {
  if (v === null) return "google";
  if (v === VERSION_RFC) return "rfc";
  if (v === VERSION_DRAFT) return "draft";
  return fail("BAD_VALUE", `unknown Roughtime version 0x${v.toString(16)}`);
}

/** SRV = SHA-512(0xff || long-term public key)[:32]: which key the client expects. */
export function srvValue(publicKey: Uint8Array): Uint8Array {
  return sha512(new Uint8Array([SRV_PREFIX]), publicKey).subarray(0, 32);
}

export interface BuildRequestOptions {
  /** Family and versions to offer; both IETF versions when absent. */
  version?: RoughtimeVersion;
  /** Explicit VER list (ascending), overriding `version`'s default; tests use it. */
  offered?: number[];
  /** 32 bytes (IETF) or 64 (Google); random when absent. */
  nonce?: Uint8Array;
  /** Adds SRV for this long-term key (IETF only). */
  serverPublicKey?: Uint8Array;
  /** Datagram size; 1024 by default, the minimum servers answer. */
  size?: number;
}

export function buildRequest(opts: BuildRequestOptions = {}): RoughtimeRequest {
  const family = familyOf(opts.version ?? "rfc");
  const nonce = opts.nonce ?? randomBytes(nonceSize(family));
  if (nonce.length !== nonceSize(family)) {
    fail("BAD_ARGUMENT", `a ${family} nonce must be ${nonceSize(family)} bytes, got ${nonce.length}`);
  }
  const size = opts.size ?? REQUEST_SIZE;
  if (family === "google") {
    // NONC + PAD\xff: header 16 bytes, values 64 + padding.
    const pad = size - 16 - nonce.length;
    if (pad < 0 || pad % 4 !== 0) fail("BAD_ARGUMENT", `cannot pad a Google request to ${size} bytes`);
    const packet = encodeMessage([[TAG.NONC, nonce], [TAG.PAD_GOOGLE, new Uint8Array(pad)]]);
    return { family, packet, nonce, offered: [], srv: null, type: null };
  }
  const offered = opts.offered ?? offeredVersions(opts.version);
  if (offered.length === 0 || offered.length > MAX_VERSIONS) {
    fail("BAD_ARGUMENT", "VER must list 1-32 versions");
  }
  const srv = opts.serverPublicKey ? srvValue(opts.serverPublicKey) : null;
  const entries: [number, Uint8Array][] = [
    [TAG.VER, u32List(offered)],
    [TAG.NONC, nonce],
    [TAG.TYPE, u32(TYPE_REQUEST)],
  ];
  if (srv) entries.push([TAG.SRV, srv]);
  const n = entries.length + 1;
  const used = 8 * n + entries.reduce((s, [, v]) => s + v.length, 0);
  const pad = size - PACKET_HEADER_SIZE - used;
  if (pad < 0 || pad % 4 !== 0) fail("BAD_ARGUMENT", `cannot pad an IETF request to ${size} bytes`);
  entries.push([TAG.ZZZZ, new Uint8Array(pad)]);
  const packet = wrapPacket(encodeMessage(entries));
  return { family, packet, nonce, offered, srv, type: TYPE_REQUEST };
}

/** Parses a request datagram (either family). Throws the codec's RoughtimeErrors on malformed input. */
export function parseRequest(packet: Uint8Array): RoughtimeRequest {
  if (hasPacketHeader(packet)) {
    const msg = decodeMessage(unwrapPacket(packet));
    const offered = readU32List(requireTag(msg, TAG.VER, undefined, "request"), TAG.VER, MAX_VERSIONS);
    const nonce = requireTag(msg, TAG.NONC, NONCE_SIZE_IETF, "request");
    const srvBytes = msg.get(TAG.SRV);
    if (srvBytes !== undefined && srvBytes.length !== 32) {
      fail("BAD_FIELD_LENGTH", "request SRV is not 32 bytes");
    }
    const typeBytes = msg.get(TAG.TYPE);
    const type = typeBytes === undefined ? null : readU32(typeBytes, TAG.TYPE);
    return { family: "ietf", packet, nonce, offered, srv: srvBytes ?? null, type };
  }
  const msg = decodeMessage(packet);
  const nonce = requireTag(msg, TAG.NONC, NONCE_SIZE_GOOGLE, "request");
  return { family: "google", packet, nonce, offered: [], srv: null, type: null };
}
