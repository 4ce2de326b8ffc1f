/**
 * The phonebook's JSON API, defined once: what `securechat serve` answers (server/) and what the directory
 * client and the chat engine read (client/). Each answer has a runtime decoder that the client runs on
 * every response, so a malformed or hostile answer is a ContractError, never a half-typed object.
 *
 * Compatibility: fields are only ever added; a decoder ignores fields it does not know and gives a
 * documented default for optional fields an older server does not send.
 */
import { CodedError } from "../coded_error.ts";
import { decodeKnockSecret } from "./knock.ts";

/** Bumped only for changes an older client cannot read. */
export const PHONEBOOK_API_VERSION = 1;

/** A phonebook answer that does not have the documented shape. */
export class ContractError extends CodedError<"BAD_RESPONSE"> {
  constructor(message: string) {
    super("BAD_RESPONSE", message);
  }
}

export interface Address {
  host: string;
  port: number;
  /** "mapping": a port the user's router forwards to it (NAT-PMP); absent for its own addresses. */
  via?: "mapping";
}

/** GET /v1/users/NAME, /v1/me, and each element of GET /v1/users. */
export interface UserEntry {
  name: string;
  /** Listed as reachable now: has a published address that has not expired, and is not revoked. */
  online: boolean;
  /** Where to dial; null when offline. The best of `candidates` (what clients before candidates read). */
  address: Address | null;
  /** Every address the user published, plus the one the phonebook saw it connect from, best first; empty
   * when offline or relay-only. From an older server: `[address]` (or empty). */
  candidates: Address[];
  /** The candidates the phonebook's reachability check reached as this user (a TLS handshake showing the
   * user's current certificate), in `candidates` order; always a subset of `candidates`. Empty when none
   * answered, the check has not run yet (or is off), or from an older server: dialers try these first and
   * the others after, never dropping one (a LAN address cannot be checked from the phonebook). */
  reachable: Address[];
  /** Unix ms of the check behind `reachable`; null when the current candidates were not checked (yet). */
  reachCheckedAt: number | null;
  /** The relay the user keeps its control connection on (reach it through there when no candidate
   * answers); null when none was published. */
  relay: Address | null;
  certPem: string;
  /** SHA-256 of the certificate's DER, 64 lowercase hex. */
  fingerprint: string;
  revoked: boolean;
  /** Unix ms the current certificate expires; null from a server that does not send it. */
  notAfter: number | null;
  /** The secret the user's listener wants knocked with (contract/knock.ts, base64url of 32 bytes): only in
   * GET /v1/users/NAME and /v1/me answered to an authenticated enrolled caller; null otherwise (and when the
   * user published none). */
  knock: string | null;
}

/** GET /v1/users?prefix=&cursor=&limit= */
export interface UserList {
  users: UserEntry[];
  /** The cursor of the next page, or null on the last one. */
  next: string | null;
}

/** The phonebook's own Roughtime server, on the phonebook's host. */
export interface RoughtimeEndpoint {
  port: number;
  /** Base64 of the 32-byte Ed25519 long-term public key. */
  publicKey: string;
  version: "rfc";
}

/** One Roughtime server of the phonebook (each node of a multi-node phonebook runs its own). */
export interface RoughtimeServer {
  /** null: the directory's own host name. */
  host: string | null;
  port: number;
  /** Base64 of the 32-byte Ed25519 long-term public key. */
  publicKey: string;
  version: "rfc";
}

/** GET /v1/info */
export interface DirectoryInfo {
  apiVersion: number;
  caCertPem: string;
  caFingerprint: string;
  inviteOnly: boolean;
  /** The server of the node that answered (what older clients read). */
  roughtime: RoughtimeEndpoint | null;
  /** The relay users keep a connection to: on the phonebook's host unless `host` names another machine (a
   * standalone `securechat relay`); null when there is none (or the server is older). */
  relay: { host?: string; port: number } | null;
  /** Every node's server; [] from a server that does not send the list. */
  roughtimeServers: RoughtimeServer[];
}

/** POST /v1/enroll and /v1/renew */
export interface IssuedCertificate {
  name: string;
  certPem: string;
  caCertPem: string;
  fingerprint: string;
  serial: string;
  notAfter: number;
}

/** PUT /v1/presence (request) */
export interface PublishRequest {
  /** The best candidate (an older server reads only this). */
  host: string;
  port: number;
  ttlSeconds: number;
  /** Every address we can be dialled at, best first (at most MAX_CANDIDATES); optional. */
  candidates?: Address[];
  /** The relay we hold a control connection to; optional. */
  relay?: Address | null;
  /** No addresses at all: reachable only through `relay` (privacy mode); then host/port are ignored and the
   * phonebook adds no observed address. */
  relayOnly?: boolean;
  /** Our listener's knock secret (contract/knock.ts, base64url of 32 bytes); optional. */
  knock?: string;
}

/** The most candidate addresses one user may publish. */
export const MAX_CANDIDATES = 8;

/** PUT /v1/presence (answer) and DELETE /v1/presence (address null, no expiresAt). */
export interface PresenceAnswer {
  name: string;
  address: Address | null;
  expiresAt?: number;
}

/** POST /v1/revoke (answer) */
export interface RevokeAnswer {
  name: string;
  revoked: string;
}

/** Every error answer (4xx, 5xx). */
export interface ErrorBody {
  error: { code: string; message: string };
}

// ---- decoders ----

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isPort(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 65535;
}

function decodeAddress(v: unknown): Address | null {
  return isObject(v) && typeof v.host === "string" && v.host.length > 0 && isPort(v.port)
    ? { host: v.host, port: v.port, ...(v.via === "mapping" ? { via: "mapping" as const } : {}) }
    : null;
}

/** Throws ContractError unless `v` is a user entry. `online` is true only with an address. */
export function decodeUserEntry(v: unknown): UserEntry {
  if (
    !isObject(v) || typeof v.name !== "string" || typeof v.certPem !== "string" ||
    typeof v.fingerprint !== "string"
  ) {
    throw new ContractError("directory sent a malformed user entry");
  }
  const address = decodeAddress(v.address);
  const relay = decodeAddress(v.relay);
  // The user's own (at most MAX_CANDIDATES) plus the one the phonebook saw it connect from.
  const listed = Array.isArray(v.candidates)
    ? v.candidates.slice(0, MAX_CANDIDATES + 1).map(decodeAddress).filter((a): a is Address => a !== null)
    : null;
  const candidates = listed ?? (address ? [address] : []);
  const same = (a: Address, b: Address) => a.host === b.host && a.port === b.port;
  // Only candidates count: an address listed here alone would be one nobody published.
  const reachable = Array.isArray(v.reachable)
    ? candidates.filter((c) =>
      (v.reachable as unknown[]).slice(0, MAX_CANDIDATES + 1).some((r) => {
        const a = decodeAddress(r);
        return a !== null && same(a, c);
      })
    )
    : [];
  return {
    name: v.name,
    // Online: dialable at an address, or through the relay it keeps a connection to.
    online: v.online === true && (address !== null || candidates.length > 0 || relay !== null),
    address: address ?? candidates[0] ?? null,
    candidates,
    reachable,
    reachCheckedAt: typeof v.reachCheckedAt === "number" && Number.isFinite(v.reachCheckedAt)
      ? v.reachCheckedAt
      : null,
    relay,
    certPem: v.certPem,
    fingerprint: v.fingerprint,
    revoked: v.revoked === true,
    notAfter: typeof v.notAfter === "number" && Number.isFinite(v.notAfter) ? v.notAfter : null,
    // A malformed secret is as good as none: the dialer then cannot knock, and says so.
    knock: decodeKnockSecret(v.knock) ? v.knock as string : null,
  };
}

/** Decodes a list of addresses (a publication's candidates): null when it is not an array of addresses. */
export function decodeAddressList(v: unknown): Address[] | null {
  if (!Array.isArray(v)) return null;
  const out = v.map(decodeAddress);
  return out.every((a) => a !== null) ? out as Address[] : null;
}

export function decodeUserList(v: unknown): UserList {
  if (!isObject(v) || !Array.isArray(v.users)) throw new ContractError("listing is malformed");
  return { users: v.users.map(decodeUserEntry), next: typeof v.next === "string" ? v.next : null };
}

export function decodeDirectoryInfo(v: unknown): DirectoryInfo {
  if (
    !isObject(v) || typeof v.apiVersion !== "number" || typeof v.caCertPem !== "string" ||
    typeof v.caFingerprint !== "string"
  ) {
    throw new ContractError("directory info is malformed");
  }
  const rt = v.roughtime;
  const servers = Array.isArray(v.roughtimeServers) ? v.roughtimeServers : [];
  return {
    apiVersion: v.apiVersion,
    caCertPem: v.caCertPem,
    caFingerprint: v.caFingerprint,
    inviteOnly: v.inviteOnly === true,
    roughtime: isObject(rt) && isPort(rt.port) && typeof rt.publicKey === "string"
      ? { port: rt.port, publicKey: rt.publicKey, version: "rfc" }
      : null,
    relay: isObject(v.relay) && isPort(v.relay.port)
      ? {
        ...(typeof v.relay.host === "string" && v.relay.host.length > 0 ? { host: v.relay.host } : {}),
        port: v.relay.port,
      }
      : null,
    roughtimeServers: servers.filter((s): s is Record<string, unknown> =>
      isObject(s) && isPort(s.port) && typeof s.publicKey === "string" &&
      (s.host === null || (typeof s.host === "string" && s.host.length > 0))
    ).map((s) => ({
      host: s.host as string | null,
      port: s.port as number,
      publicKey: s.publicKey as string,
      version: "rfc" as const,
    })),
  };
}

export function decodeIssuedCertificate(v: unknown): IssuedCertificate {
  if (
    !isObject(v) || typeof v.name !== "string" || typeof v.certPem !== "string" ||
    typeof v.caCertPem !== "string" || typeof v.fingerprint !== "string" || typeof v.serial !== "string" ||
    typeof v.notAfter !== "number"
  ) {
    throw new ContractError("enrollment answer is malformed");
  }
  return {
    name: v.name,
    certPem: v.certPem,
    caCertPem: v.caCertPem,
    fingerprint: v.fingerprint,
    serial: v.serial,
    notAfter: v.notAfter,
  };
}

export function decodeRevokeAnswer(v: unknown): RevokeAnswer {
  if (!isObject(v) || typeof v.revoked !== "string" || typeof v.name !== "string") {
    throw new ContractError("revocation answer is malformed");
  }
  return { name: v.name, revoked: v.revoked };
}

/** The error of an error answer, or null when the body is not one. */
export function decodeErrorBody(v: unknown): ErrorBody["error"] | null {
  if (!isObject(v) || !isObject(v.error)) return null;
  const { code, message } = v.error;
  return typeof code === "string" && typeof message === "string" ? { code, message } : null;
}
