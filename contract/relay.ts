/**
 * The relay's wire contract, defined once: what `securechat relay` (and `serve`, which relays by default)
 * speaks and what the chat client's relay part sends. Two kinds of connection arrive on the relay's one
 * TCP port, told apart by their first byte:
 *
 * - a control connection: mutual TLS (the user's certificate, checked against the CA and the CRL), then JSON
 *   lines both ways (`RelayRequest` up, `RelayNotice` down). One per online user; it says the user is there.
 * - a circuit leg: plain TCP whose first line is `CIRCUIT_MAGIC TOKEN ROLE\n`, the token handed out over the
 *   control connections of both ends. When both legs are in, the relay writes `CIRCUIT_READY` to each and
 *   from then on copies bytes. The peers run their own mutual TLS 1.3 session over the circuit, so the relay
 *   forwards only TLS records: it learns who talks to whom, when and how much, never what.
 */
import { ContractError } from "./phonebook.ts";

/** The first bytes of a circuit leg (never the first byte of TLS, 0x16). */
export const CIRCUIT_MAGIC = "SCR1";
/** Written to each leg once both are joined. */
export const CIRCUIT_READY = 0x2b;
/** The token: 32 lowercase hex characters (128 random bits). */
export const CIRCUIT_TOKEN = /^[0-9a-f]{32}$/;
/** Length of a leg's first line: magic, space, token, space, role, newline. */
export const CIRCUIT_LINE_BYTES = CIRCUIT_MAGIC.length + 1 + 32 + 1 + 1 + 1;
/** The default TCP port of a relay (the phonebook's is 10040). */
export const DEFAULT_RELAY_PORT = 10041;
/** The longest control line either side accepts. */
export const MAX_CONTROL_LINE_BYTES = 4096;

/** Stable codes of relay refusals (an `error` notice, or why a circuit was ended). */
export type RelayErrorCode =
  | "OFFLINE"
  | "NO_SUCH_CIRCUIT"
  | "LIMIT_CIRCUITS"
  | "LIMIT_BYTES"
  | "LIMIT_DURATION"
  | "JOIN_TIMEOUT"
  | "BAD_REQUEST"
  | "LIMIT_REVERSALS"
  | "SELF";

/** Client to relay, over the control connection. */
export type RelayRequest =
  /** A circuit to `to`; answered by `circuit` or `error` with the same id. */
  | { t: "dial"; id: number; to: string }
  /** Connection reversal: ask `to` to dial us back directly (we can be reached, it cannot); answered by
   * `reversing` or `error` with the same id. The callee dials only what the phonebook lists for us. */
  | { t: "reverse"; id: number; to: string }
  /** Hole punching: "I will connect from my port `port` to you; from which port will you connect to me?"
   * Passed to `to` as `punch`; answered by `punching` or `error` with the same id. */
  | { t: "punch"; id: number; to: string; port: number }
  /** The callee's answer to a `punch`: it connects from `port` now. */
  | { t: "punch-reply"; to: string; port: number }
  /** Keep-alive; answered by `pong`. */
  | { t: "ping" };

/** Relay to client, over the control connection. */
export type RelayNotice =
  /** First line: the relay judged our certificate and lists us under `name`. */
  | { t: "ready"; name: string }
  | { t: "circuit"; id: number; token: string }
  | { t: "incoming"; token: string; from: string }
  /** The request was passed on (to the dialer), or: dial `from` back (to the callee). */
  | { t: "reversing"; id: number }
  | { t: "dial-back"; from: string }
  /** A `punch` passed on (to the dialer), a peer's `punch` (to the callee), the callee's reply (to the dialer). */
  | { t: "punching"; id: number }
  | { t: "punch"; from: string; port: number }
  | { t: "punch-reply"; from: string; port: number }
  | { t: "error"; id?: number; code: RelayErrorCode | string; message: string }
  /** A circuit ended by the relay (a limit); `token` says which. */
  | { t: "closed"; token: string; code: RelayErrorCode | string; message: string }
  | { t: "pong" };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Throws ContractError unless `v` is a request a client may send. */
export function decodeRelayRequest(v: unknown): RelayRequest {
  if (isObject(v) && v.t === "dial" && Number.isSafeInteger(v.id) && typeof v.to === "string") {
    return { t: "dial", id: v.id as number, to: v.to };
  }
  if (isObject(v) && v.t === "reverse" && Number.isSafeInteger(v.id) && typeof v.to === "string") {
    return { t: "reverse", id: v.id as number, to: v.to };
  }
  const port = (x: unknown): x is number =>
    Number.isInteger(x) && (x as number) >= 1 && (x as number) <= 65535;
  if (
    isObject(v) && v.t === "punch" && Number.isSafeInteger(v.id) && typeof v.to === "string" && port(v.port)
  ) {
    return { t: "punch", id: v.id as number, to: v.to, port: v.port };
  }
  if (isObject(v) && v.t === "punch-reply" && typeof v.to === "string" && port(v.port)) {
    return { t: "punch-reply", to: v.to, port: v.port };
  }
  if (isObject(v) && v.t === "ping") return { t: "ping" };
  throw new ContractError("not a relay request");
}

/** Throws ContractError unless `v` is a notice a relay may send. */
export function decodeRelayNotice(v: unknown): RelayNotice {
  if (!isObject(v)) throw new ContractError("relay notice is not an object");
  const token = typeof v.token === "string" && CIRCUIT_TOKEN.test(v.token) ? v.token : null;
  switch (v.t) {
    case "ready":
      if (typeof v.name === "string") return { t: "ready", name: v.name };
      break;
    case "circuit":
      if (Number.isSafeInteger(v.id) && token) return { t: "circuit", id: v.id as number, token };
      break;
    case "incoming":
      if (token && typeof v.from === "string") return { t: "incoming", token, from: v.from };
      break;
    case "reversing":
      if (Number.isSafeInteger(v.id)) return { t: "reversing", id: v.id as number };
      break;
    case "dial-back":
      if (typeof v.from === "string") return { t: "dial-back", from: v.from };
      break;
    case "punching":
      if (Number.isSafeInteger(v.id)) return { t: "punching", id: v.id as number };
      break;
    case "punch":
    case "punch-reply":
      if (
        typeof v.from === "string" && Number.isInteger(v.port) && (v.port as number) >= 1 &&
        (v.port as number) <= 65535
      ) {
        return { t: v.t, from: v.from, port: v.port as number };
      }
      break;
    case "error":
      if (typeof v.code === "string" && typeof v.message === "string") {
        return {
          t: "error",
          ...(Number.isSafeInteger(v.id) ? { id: v.id as number } : {}),
          code: v.code,
          message: v.message,
        };
      }
      break;
    case "closed":
      if (token && typeof v.code === "string" && typeof v.message === "string") {
        return { t: "closed", token, code: v.code, message: v.message };
      }
      break;
    case "pong":
      return { t: "pong" };
  }
  throw new ContractError("malformed relay notice");
}

/** The first line of a circuit leg. */
export function circuitLine(token: string, role: "D" | "L"): string {
  return `${CIRCUIT_MAGIC} ${token} ${role}\n`;
}

/** Parses a leg's first line; null when it is not one. */
export function parseCircuitLine(line: string): { token: string; role: "D" | "L" } | null {
  const m = /^SCR1 ([0-9a-f]{32}) ([DL])\n$/.exec(line);
  return m ? { token: m[1], role: m[2] as "D" | "L" } : null;
}
