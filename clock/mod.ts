/**
 * The public surface of `clock/`: Roughtime (codec, client, server, reports) and the trusted clock.
 * Other folders import only from here.
 */
import type { RoughtimeVersion, ServerSpec } from "./types.ts";
import { DEFAULT_PORT } from "./roughtime/constants.ts";
import { fromBase64, toBase64 } from "./roughtime/encoding.ts";
import { RoughtimeError } from "./roughtime/errors.ts";

export * from "./types.ts";
export { deadlinePassed } from "./deadline.ts";
export { RoughtimeError } from "./roughtime/errors.ts";
export type { RoughtimeErrorCode } from "./roughtime/errors.ts";
export {
  generateLongTermSeed,
  loadOrCreateLongTermKey,
  publicKeyFromSeed,
  writeNewLongTermKey,
} from "./keys.ts";
export {
  Responder,
  type RoughtimeServerOptions,
  type RoughtimeServerStats,
  type RunningRoughtimeServer,
  startRoughtimeServer,
} from "./roughtime/server.ts";
export type { UdpApi } from "./roughtime/udp.ts";
export { TrustedClock, type TrustedClockOptions, verifyTimeProof } from "./trusted_clock.ts";
export { type BootClock, systemBootClock } from "./boot_clock.ts";
export { type QueryOptions, type QueryResult, queryServer } from "./roughtime/client.ts";
export { queryChain, queryParallel, type ServerOutcome } from "./roughtime/chain.ts";
export {
  type AnchorUpdate,
  combineSamples,
  DRIFT_PPM,
  nextAnchorInterval,
  proofOrder,
  type SupportedInterval,
  type TimeSample,
} from "./roughtime/combine.ts";
export {
  buildReport,
  checkReport,
  type Inconsistency,
  type MalfeasanceReport,
  type ReportVerdict,
} from "./roughtime/malfeasance.ts";
export { type VerifiedReply, type VerifyOptions, verifyReply } from "./roughtime/verify.ts";
export { buildRequest, parseRequest } from "./roughtime/request.ts";

const VERSION_NAMES: Record<string, RoughtimeVersion> = {
  rfc: "rfc",
  v1: "rfc",
  "1": "rfc",
  "0x00000001": "rfc",
  draft: "draft",
  ietf: "draft",
  "0x8000000c": "draft",
  google: "google",
  "google-roughtime": "google",
};

/** Parses HOST:PORT:PUBKEY_BASE64[:VERSION][:tcp] (an IPv6 host goes in brackets: [::1]:2002:KEY).
 * VERSION is rfc, draft or google; a trailing ":tcp" asks for RFC 10049 framing over TCP instead of UDP.
 * Throws RoughtimeError BAD_SERVER_SPEC. */
export function parseServerSpec(s: string): ServerSpec {
  const bad = (why: string): never => {
    throw new RoughtimeError(
      "BAD_SERVER_SPEC",
      `bad server "${s}": ${why} (want HOST:PORT:PUBKEY_BASE64[:VERSION])`,
    );
  };
  let host: string;
  let rest: string;
  if (s.startsWith("[")) {
    const end = s.indexOf("]");
    if (end < 0 || s[end + 1] !== ":") bad("unclosed [IPv6] host");
    host = s.slice(1, end);
    rest = s.slice(end + 2);
  } else {
    const i = s.indexOf(":");
    if (i < 0) bad("missing port");
    host = s.slice(0, i);
    rest = s.slice(i + 1);
  }
  const parts = rest.split(":");
  let transport: "tcp" | undefined;
  if (parts.length >= 3 && parts[parts.length - 1].toLowerCase() === "tcp") {
    transport = "tcp";
    parts.pop();
  }
  if (parts.length < 2 || parts.length > 3) bad("wrong number of fields");
  if (!host) bad("empty host");
  const [portText, keyText, versionText] = parts;
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    bad("port must be 1-65535");
  }
  let publicKey: Uint8Array = new Uint8Array();
  try {
    publicKey = fromBase64(keyText);
  } catch {
    bad("public key is not base64");
  }
  if (publicKey.length !== 32) bad("public key must be 32 bytes");
  const spec: ServerSpec = {
    name: host.includes(":") ? `[${host}]:${portText}` : `${host}:${portText}`,
    host,
    port: Number(portText),
    publicKey,
  };
  if (versionText !== undefined) {
    const v = VERSION_NAMES[versionText.toLowerCase()];
    if (!v) bad(`unknown version "${versionText}" (rfc, draft or google)`);
    spec.version = v;
  }
  if (transport) {
    if (spec.version === "google") bad("Google-Roughtime has no TCP framing");
    spec.transport = transport;
  }
  return spec;
}

/** A server entry as stored in config.json: { name, host, port, publicKey: base64, version? }.
 * Throws RoughtimeError BAD_SERVER_SPEC. */
export function serverSpecFromJson(o: unknown): ServerSpec {
  const bad = (why: string): never => {
    throw new RoughtimeError("BAD_SERVER_SPEC", `bad Roughtime server entry: ${why}`);
  };
  if (typeof o !== "object" || o === null || Array.isArray(o)) bad("not an object");
  const e = o as Record<string, unknown>;
  if (typeof e.host !== "string" || e.host === "") bad("host missing");
  const host = e.host as string;
  if (typeof e.port !== "number" || !Number.isInteger(e.port) || e.port < 1 || e.port > 65535) {
    bad("bad port");
  }
  if (typeof e.publicKey !== "string") bad("publicKey missing");
  let publicKey: Uint8Array = new Uint8Array();
  try {
    publicKey = fromBase64(e.publicKey as string);
  } catch {
    bad("publicKey is not base64");
  }
  if (publicKey.length !== 32) bad("publicKey must be 32 bytes");
  const spec: ServerSpec = {
    name: typeof e.name === "string" && e.name ? e.name : `${host}:${e.port}`,
    host,
    port: e.port as number,
    publicKey,
  };
  if (e.version !== undefined && e.version !== null) {
    if (e.version !== "rfc" && e.version !== "draft" && e.version !== "google") {
      bad("version must be rfc, draft or google");
    }
    spec.version = e.version as RoughtimeVersion;
  }
  if (e.transport !== undefined && e.transport !== null) {
    if (e.transport !== "udp" && e.transport !== "tcp") bad("transport must be udp or tcp");
    spec.transport = e.transport as "udp" | "tcp";
  }
  return spec;
}

/** The config.json form of a server entry (inverse of serverSpecFromJson). */
export function serverSpecToJson(
  s: ServerSpec,
): {
  name: string;
  host: string;
  port: number;
  publicKey: string;
  version?: RoughtimeVersion;
  transport?: "udp" | "tcp";
} {
  return {
    name: s.name,
    host: s.host,
    port: s.port,
    publicKey: toBase64(s.publicKey),
    ...(s.version ? { version: s.version } : {}),
    ...(s.transport ? { transport: s.transport } : {}),
  };
}

function publicServer(host: string, port: number, key: string): ServerSpec {
  return { name: host, host, port, publicKey: fromBase64(key) };
}

/** The public servers listed in roughtime.md (UDP). */
export const PUBLIC_SERVERS: ServerSpec[] = [
  publicServer("roughtime.cloudflare.com", 2003, "0GD7c3yP8xEc4Zl2zeuN2SlLvDVVocjsPSL8/Rl/7zg="),
  publicServer("roughtime.int08h.com", DEFAULT_PORT, "AW5uAoTSTDfG5NfY1bTh08GUnOqlRb+HVhbJ3ODJvsE="),
  publicServer("roughtime.se", DEFAULT_PORT, "S3AzfZJ5CjSdkJ21ZJGbxqdYP/SoE8fXKY0+aicsehI="),
  publicServer("time.txryan.com", DEFAULT_PORT, "iBVjxg/1j7y1+kQUTBYdTabxCppesU/07D4PMDJk2WA="),
  publicServer("sth1.roughtime.netnod.se", DEFAULT_PORT, "9l1JN4HakGnG44yyqyNNCb0HN0XfsysBbnl/kbZoZDc="),
  publicServer("sth2.roughtime.netnod.se", DEFAULT_PORT, "T/xxX4ERUBAOpt64Z8phWamKsASZxJ0VWuiPm3GS/8g="),
  publicServer("time.teax.dev", DEFAULT_PORT, "84pMADvKUcSOq5RNbVRjVrjiU16Dxo2XV2Qkm+4DRTg="),
  publicServer(
    "roughtime.sturdystatistics.com",
    DEFAULT_PORT,
    "NqIjwLopQn6yQChtE21Mb97dAbAPe5UOuTa0tOakgD8=",
  ),
  publicServer("rough.time.nl", DEFAULT_PORT, "v2CievhgKsxzlWPwIkYFUXeA51Akhkv5uhJCj1/kbiY="),
];
