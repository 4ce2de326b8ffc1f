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
  checkPacket,
  encodeMessage,
  hasPacketHeader,
  MessageLayout,
  scanMessage,
  tagName,
  u32,
  u32List,
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

/** A request's fields as positions in its datagram, filled by scanRequest without allocating: the server
 * scans every request this way, and parseRequest builds its RoughtimeRequest from the same scan, so both
 * apply one set of rules. */
export class RequestScan {
  family: HashFamily = "ietf";
  nonceStart = 0;
  /** The VER list: `verCount` uint32 values from `verStart` (IETF; none for Google). */
  verStart = 0;
  verCount = 0;
  /** Where the 32-byte SRV value starts, or -1 when the request has none. */
  srvStart = -1;
  /** TYPE value, or -1 when the tag is absent (drafts 12-13 clients). */
  type = -1;
  readonly layout: MessageLayout = new MessageLayout();
}

function le32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

/** The value of `tag` in the scanned request, as an index into its layout; MISSING_TAG when absent, and
 * BAD_FIELD_LENGTH unless it has `size` bytes (when given). */
function requireScanned(layout: MessageLayout, tag: number, size?: number): number {
  const i = layout.find(tag);
  if (i < 0) fail("MISSING_TAG", `request has no ${tagName(tag)}`);
  const len = layout.ends[i] - layout.starts[i];
  if (size !== undefined && len !== size) {
    fail("BAD_FIELD_LENGTH", `request ${tagName(tag)} is ${len} bytes, expected ${size}`);
  }
  return i;
}

/** Checks a request datagram (either family) and records where its fields lie in `scan`. Throws the
 * codec's RoughtimeErrors on malformed input, as parseRequest does. */
export function scanRequest(packet: Uint8Array, scan: RequestScan): void {
  const layout = scan.layout;
  if (!hasPacketHeader(packet)) {
    scanMessage(packet, 0, packet.length, layout);
    scan.family = "google";
    scan.nonceStart = layout.starts[requireScanned(layout, TAG.NONC, NONCE_SIZE_GOOGLE)];
    scan.verStart = 0;
    scan.verCount = 0;
    scan.srvStart = -1;
    scan.type = -1;
    return;
  }
  checkPacket(packet);
  scanMessage(packet, PACKET_HEADER_SIZE, packet.length, layout);
  scan.family = "ietf";
  // VER: a non-empty, strictly ascending list of at most MAX_VERSIONS uint32 (the rules of readU32List).
  const ver = requireScanned(layout, TAG.VER);
  const verStart = layout.starts[ver];
  const verLen = layout.ends[ver] - verStart;
  if (verLen === 0 || verLen % 4 !== 0) {
    fail("BAD_FIELD_LENGTH", `${tagName(TAG.VER)} of ${verLen} bytes is not a non-empty list of uint32`);
  }
  if (verLen / 4 > MAX_VERSIONS) {
    fail("BAD_VALUE", `${tagName(TAG.VER)} lists more than ${MAX_VERSIONS} versions`);
  }
  for (let at = verStart + 4; at < verStart + verLen; at += 4) {
    if (le32(packet, at) <= le32(packet, at - 4)) {
      fail("BAD_VALUE", `${tagName(TAG.VER)} is not strictly ascending`);
    }
  }
  scan.verStart = verStart;
  scan.verCount = verLen / 4;
  scan.nonceStart = layout.starts[requireScanned(layout, TAG.NONC, NONCE_SIZE_IETF)];
  const srv = layout.find(TAG.SRV);
  if (srv >= 0 && layout.ends[srv] - layout.starts[srv] !== 32) {
    fail("BAD_FIELD_LENGTH", "request SRV is not 32 bytes");
  }
  scan.srvStart = srv >= 0 ? layout.starts[srv] : -1;
  const type = layout.find(TAG.TYPE);
  if (type >= 0) {
    const len = layout.ends[type] - layout.starts[type];
    if (len !== 4) fail("BAD_FIELD_LENGTH", `${tagName(TAG.TYPE)} is ${len} bytes, expected 4`);
    scan.type = le32(packet, layout.starts[type]);
  } else {
    scan.type = -1;
  }
}

/** Whether the scanned request lists version `v` in VER. */
export function offers(packet: Uint8Array, scan: RequestScan, v: number): boolean {
  for (let i = 0; i < scan.verCount; i++) if (le32(packet, scan.verStart + 4 * i) === v) return true;
  return false;
}

/** Reused by parseRequest, which copies what it needs out of it before returning. */
const parseScan = new RequestScan();

/** Parses a request datagram (either family). Throws the codec's RoughtimeErrors on malformed input. */
export function parseRequest(packet: Uint8Array): RoughtimeRequest {
  const scan = parseScan;
  scanRequest(packet, scan);
  if (scan.family === "google") {
    const nonce = packet.subarray(scan.nonceStart, scan.nonceStart + NONCE_SIZE_GOOGLE);
    return { family: "google", packet, nonce, offered: [], srv: null, type: null };
  }
  const offered: number[] = [];
  for (let i = 0; i < scan.verCount; i++) offered.push(le32(packet, scan.verStart + 4 * i));
  return {
    family: "ietf",
    packet,
    nonce: packet.subarray(scan.nonceStart, scan.nonceStart + NONCE_SIZE_IETF),
    offered,
    srv: scan.srvStart >= 0 ? packet.subarray(scan.srvStart, scan.srvStart + 32) : null,
    type: scan.type >= 0 ? scan.type : null,
  };
}
