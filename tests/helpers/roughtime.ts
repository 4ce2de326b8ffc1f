/**
 * Test helpers for clock/: the Roughtime vectors kept in the repo (tests/testdata/roughtime/), local
 * servers on free loopback ports, and a reply forger that signs whatever fields a negative test needs.
 */
import {
  CONTEXT_DELEGATION_GOOGLE,
  CONTEXT_DELEGATION_IETF,
  CONTEXT_RESPONSE,
  SERVER_VERSIONS,
  TAG,
  TYPE_REQUEST,
  TYPE_RESPONSE,
  VERSION_RFC,
} from "../../clock/roughtime/constants.ts";
import { publicKeyFromSeed, randomBytes, signWithContext } from "../../clock/roughtime/crypto.ts";
import { buildTree, leafHash } from "../../clock/roughtime/merkle.ts";
import { type RoughtimeRequest, srvValue } from "../../clock/roughtime/request.ts";
import { encodeMessage, u32, u32List, u64, wrapPacket } from "../../clock/roughtime/wire.ts";
import {
  generateLongTermSeed,
  type RoughtimeServerOptions,
  type RunningRoughtimeServer,
  type ServerSpec,
  startRoughtimeServer,
} from "../../clock/mod.ts";

/** The golden vectors, kept in the repo (see the README there for where each file came from). A missing
 * file makes its test fail with ENOENT: vector tests never skip. */
export const VECTORS_DIR = new URL("../testdata/roughtime/", import.meta.url);

export function readVectorJson(name: string): unknown {
  return JSON.parse(Deno.readTextFileSync(new URL(name, VECTORS_DIR)));
}

export function readVectorBytes(name: string): Uint8Array {
  return Deno.readFileSync(new URL(name, VECTORS_DIR));
}

export function hex(s: string): Uint8Array {
  if (s.length % 2 !== 0) throw new Error("odd hex");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function b64(s: string): Uint8Array {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

export function toB64(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

/** An RFC request with no padding at all (VER {1}, NONC, TYPE, SRV): 116 bytes, as some clients send over
 * TCP, where the 1,024-byte minimum does not apply. */
export function unpaddedRequest(serverPublicKey: Uint8Array): RoughtimeRequest {
  const nonce = randomBytes(32);
  const srv = srvValue(serverPublicKey);
  const packet = wrapPacket(encodeMessage([
    [TAG.VER, u32List([VERSION_RFC])],
    [TAG.NONC, nonce],
    [TAG.TYPE, u32(TYPE_REQUEST)],
    [TAG.SRV, srv],
  ]));
  return { family: "ietf", packet, nonce, offered: [VERSION_RFC], srv, type: TYPE_REQUEST };
}

/** Local servers on free loopback ports; `close()` stops them all. */
export interface LocalServers {
  servers: RunningRoughtimeServer[];
  specs: ServerSpec[];
  close(): Promise<void>;
}

export async function startLocalServers(
  opts: (Partial<RoughtimeServerOptions> & { version?: ServerSpec["version"] })[],
): Promise<LocalServers> {
  const servers: RunningRoughtimeServer[] = [];
  const specs: ServerSpec[] = [];
  for (const [i, o] of opts.entries()) {
    const s = await startRoughtimeServer({
      ...o,
      hostname: "127.0.0.1",
      port: 0,
      longTermSeed: o.longTermSeed ?? generateLongTermSeed(),
    });
    servers.push(s);
    specs.push({
      name: `local${i}`,
      host: "127.0.0.1",
      port: s.port,
      publicKey: s.publicKey,
      version: o.version,
    });
  }
  return { servers, specs, close: async () => void (await Promise.all(servers.map((s) => s.close()))) };
}

/** Every field of a reply a negative test may want to get wrong. */
export interface ForgeOptions {
  longTermSeed: Uint8Array;
  onlineSeed?: Uint8Array;
  /** In the version's unit (IETF seconds, Google microseconds). */
  midp: bigint;
  radi: number;
  mint?: bigint;
  maxt?: bigint;
  /** SREP VER (IETF); default the first one the request offered. */
  version?: number;
  vers?: number[];
  deleContext?: Uint8Array;
  srepContext?: Uint8Array;
  /** Other requests batched with this one (it is leaf `position`). */
  batch?: RoughtimeRequest[];
  position?: number;
  /** Overrides applied to the top-level message before encoding. */
  override?: (entries: Map<number, Uint8Array>) => void;
  /** Signs DELE with this seed instead of the long-term one. */
  deleSignerSeed?: Uint8Array;
}

/** Builds and signs a reply to `req` exactly as told (no validation: tests make bad replies with it). */
export function forgeReply(req: RoughtimeRequest, o: ForgeOptions): Uint8Array {
  const family = req.family;
  const onlineSeed = o.onlineSeed ?? randomBytes(32);
  const dele = encodeMessage([
    [TAG.PUBK, publicKeyFromSeed(onlineSeed)],
    [TAG.MINT, u64(o.mint ?? 0n)],
    [TAG.MAXT, u64(o.maxt ?? (1n << 64n) - 1n)],
  ]);
  const deleCtx = o.deleContext ??
    (family === "google" ? CONTEXT_DELEGATION_GOOGLE : CONTEXT_DELEGATION_IETF);
  const cert = encodeMessage([[TAG.SIG, signWithContext(o.deleSignerSeed ?? o.longTermSeed, deleCtx, dele)], [
    TAG.DELE,
    dele,
  ]]);
  const requests = o.batch ?? [req];
  const position = o.position ?? 0;
  const tree = buildTree(
    family,
    requests.map((r) => leafHash(family, family === "ietf" ? r.packet : r.nonce)),
  );
  const srepEntries: [number, Uint8Array][] = [[TAG.RADI, u32(o.radi)], [TAG.MIDP, u64(o.midp)], [
    TAG.ROOT,
    tree.root,
  ]];
  if (family === "ietf") {
    srepEntries.push([TAG.VER, u32(o.version ?? req.offered[0])], [
      TAG.VERS,
      u32List(o.vers ?? [...SERVER_VERSIONS]),
    ]);
  }
  const srep = encodeMessage(srepEntries);
  const sig = signWithContext(onlineSeed, o.srepContext ?? CONTEXT_RESPONSE, srep);
  const entries = new Map<number, Uint8Array>([
    [TAG.SIG, sig],
    [TAG.NONC, req.nonce],
    [TAG.PATH, tree.paths[position]],
    [TAG.SREP, srep],
    [TAG.CERT, cert],
    [TAG.INDX, u32(position)],
  ]);
  if (family === "ietf") entries.set(TAG.TYPE, u32(TYPE_RESPONSE));
  o.override?.(entries);
  const msg = encodeMessage(entries);
  return family === "ietf" ? wrapPacket(msg) : msg;
}

/** Current Unix time in the family's unit, for forged replies that should otherwise be valid. */
export function nowUnits(family: "ietf" | "google"): bigint {
  return family === "ietf" ? BigInt(Math.round(Date.now() / 1000)) : BigInt(Date.now()) * 1000n;
}
