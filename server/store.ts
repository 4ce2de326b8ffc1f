/**
 * The directory's state behind one interface, with two implementations: the embedded SQLite file (default,
 * one process: store_sqlite.ts) and PostgreSQL (many `serve` nodes over one database: store_postgres.ts).
 *
 * Everything a node needs to agree on with the others lives here: users (a name bound to its key, current
 * certificate and presence), every certificate ever issued (for the CRL), the revocation counter and the
 * last signed CRL with its CRL Number, invitation tokens (only their SHA-256), the issuance rate buckets, and
 * the Roughtime servers the nodes run. Operations that must be atomic are single methods (enroll, renew,
 * revoke...), each one transaction in the backend, so callers never hold a transaction open across an await.
 */
import { createHash } from "node:crypto";
import { type Address, decodeAddressList } from "../contract/mod.ts";

export interface UserRow {
  name: string;
  keyId: string;
  serial: string;
  certPem: string;
  fingerprint: string;
  notAfter: number;
  createdAt: number;
  revoked: boolean;
  addrHost: string | null;
  addrPort: number | null;
  addrExpires: number | null;
  /** The listener's knock secret as published (base64url), or null. */
  knock: string | null;
  /** The current publication beyond its best address, with its check; null when there is none. */
  reach: StoredReach | null;
}

/** What a publication says besides its best address (docs/protocol.md "Reachability"). Stored with the
 * user, so every node lists the same candidates and a restarted phonebook still has them. */
export interface PublishedReach {
  /** Every candidate, the observed one included, best first. */
  candidates: Address[];
  relay: Address | null;
  relayOnly: boolean;
  /** Unix ms the publication lapses (also for relay-only ones, which have no stored address). */
  expires: number;
  /** Names what a check result is about (the user's certificate and the candidate set, see reachKey): a
   * result is stored only while the key is still the user's, and kept across refreshes with the same key. */
  key: string;
}

export interface StoredReach extends PublishedReach {
  /** The candidates the last check of `key` reached; null when `key` was not checked yet. */
  reachable: Address[] | null;
  checkedAt: number | null;
}

export interface IssuedCert {
  serial: string;
  name: string;
  keyId: string;
  certPem: string;
  fingerprint: string;
  notAfter: number;
}

export type TokenState = "valid" | "unknown" | "used" | "expired";

export type RevokeReason = "unspecified" | "superseded" | "admin";

/** The outcome of an enrollment transaction. */
export type EnrollOutcome = "ok" | "name_taken" | "bad_token";
/** The outcome of a renewal transaction: "stale" when the presented certificate is no longer the user's. */
export type RenewOutcome = "ok" | "stale" | "rate_limited";

/** The last CRL a node signed, shared so every node serves the same (highest-numbered) list. */
export interface StoredCrl {
  number: number;
  /** The revocation counter the list was made from. */
  revision: number;
  madeAt: number;
  der: Uint8Array;
}

/** What a CRL request needs to decide whether the stored list is still current, in one read. */
export interface CrlState {
  revision: number;
  crl: { number: number; revision: number; madeAt: number } | null;
}

/** A Roughtime server run by one of the nodes. `host` null means "the directory's own host name". */
export interface TimeServerRow {
  host: string | null;
  port: number;
  publicKey: string;
  seenAt: number;
}

/** A token bucket's parameters (rate_limit.ts has the arithmetic). */
export interface BucketSpec {
  perSecond: number;
  burst: number;
}

export interface DirectoryStore {
  readonly kind: "sqlite" | "postgres";
  /** Where the data is, safe to print: a file path, or the database URL with any password removed. */
  readonly location: string;
  close(): Promise<void>;

  getUser(name: string): Promise<UserRow | null>;
  /** Users in name order, after `after` (exclusive), whose name starts with `prefix`. */
  listUsers(prefix: string, after: string | null, limit: number): Promise<UserRow[]>;
  countUsers(): Promise<number>;

  /** Atomically: the name must be free and, when `token` is given, the token valid (it is then used up);
   * stores the certificate and the user. Nothing is changed unless the outcome is "ok". */
  enroll(issued: IssuedCert, nowMs: number, token: string | null): Promise<EnrollOutcome>;
  /** Atomically: `oldSerial` must still be the user's current, unrevoked certificate and fewer than
   * `maxIssued` certificates issued to the name since `sinceMs`; stores the new one, makes it current and
   * revokes the old one as superseded. */
  renew(issued: IssuedCert, oldSerial: string, nowMs: number, sinceMs: number, maxIssued: number): Promise<
    RenewOutcome
  >;
  /** The user revokes their own current certificate: it goes on the CRL, the user is marked revoked. */
  revokeOwn(name: string, serial: string, nowMs: number): Promise<void>;
  /** Admin: revokes the user's current certificate; with `release`, also frees the name. Null when there is
   * no such user. */
  adminRevoke(name: string, release: boolean, nowMs: number): Promise<{ serial: string } | null>;

  /** Sets the best address and, with `reach`, the rest of the publication; a check result is kept when
   * `reach.key` is the stored key, and dropped otherwise (or without `reach`). */
  setPresence(
    name: string,
    host: string,
    port: number,
    expiresMs: number,
    reach?: PublishedReach,
  ): Promise<void>;
  /** Clears the best address; `reach` (a relay-only publication) is stored as setPresence does, without it
   * the whole publication is cleared. */
  clearPresence(name: string, reach?: PublishedReach): Promise<void>;
  /** Stores a check result for `key`; false (nothing changed) when the user's stored key is another one by
   * now (a newer publication, from any node, or a withdrawal). */
  setReachResult(name: string, key: string, reachable: Address[], checkedAt: number): Promise<boolean>;
  /** Sets (or, null, clears) the knock secret the user's listener published. */
  setKnock(name: string, knock: string | null): Promise<void>;

  /** Certificates issued for `name` at or after `sinceMs` (renewal limit). */
  certsIssuedSince(name: string, sinceMs: number): Promise<number>;
  getCert(serial: string): Promise<{ name: string; revokedAt: number | null } | null>;
  /** Revoked certificates that have not expired by `nowMs` (an expired certificate is refused anyway, so
   * RFC 5280 lets the CRL drop it). */
  revokedCerts(nowMs: number): Promise<{ serial: string; revokedAt: number }[]>;

  /** The revocation counter (bumped by every revocation on any node) and the stored CRL's header. */
  crlState(): Promise<CrlState>;
  /** The stored CRL, or null. */
  storedCrl(): Promise<StoredCrl | null>;
  /** The next CRL Number (RFC 5280 5.2.3): one persistent counter for all nodes, so numbers keep growing
   * across restarts, clock changes and concurrent signers. */
  nextCrlNumber(): Promise<number>;
  /** Stores `crl` unless a higher-numbered one is already stored; returns the one stored afterwards. */
  saveCrl(crl: StoredCrl): Promise<StoredCrl>;

  addToken(token: string, nowMs: number, ttlMs: number): Promise<void>;
  tokenState(token: string, nowMs: number): Promise<TokenState>;

  /** Takes `cost` from the shared bucket `key`; 0 when allowed, else the seconds to wait. Shared by every
   * node, so a client cannot multiply its issuance budget by spreading requests over nodes. */
  takeBucket(key: string, cost: number, nowMs: number, spec: BucketSpec): Promise<number>;

  /** The node's Roughtime server says it is alive (added, or its address and time refreshed). */
  announceTimeServer(
    s: { host: string | null; port: number; publicKey: string },
    nowMs: number,
  ): Promise<void>;
  /** Roughtime servers announced at or after `sinceMs`, by public key. */
  timeServers(sinceMs: number): Promise<TimeServerRow[]>;

  /** Binds the database to a CA on first use; refuses (ServerSetupError CA_KEY) a CA other than the bound
   * one, so a node started with the wrong key cannot issue into a shared directory. */
  bindCa(caFingerprint: string): Promise<void>;
  /** The bound CA's fingerprint, or null for a database no node has used yet. */
  boundCa(): Promise<string | null>;

  /** Bulk import of users with their current certificates, one transaction per call (benchmarks, and moving
   * a directory from one backend to another). */
  importUsers(
    users: IssuedCert[],
    nowMs: number,
    presence?: (c: IssuedCert) => PresenceImport | null,
  ): Promise<
    void
  >;
}

export interface PresenceImport {
  host: string;
  port: number;
  expiresMs: number;
}

/** Only a token's hash is stored, so a copy of the database does not hand out unused invitations. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** The rows of `users` as both backends return them (SQLite integers, PostgreSQL bigint strings). */
export function toUserRow(r: Record<string, unknown>): UserRow {
  return {
    name: String(r.name),
    keyId: String(r.key_id),
    serial: String(r.serial),
    certPem: String(r.cert_pem),
    fingerprint: String(r.fingerprint),
    notAfter: Number(r.not_after),
    createdAt: Number(r.created_at),
    revoked: r.revoked === true || Number(r.revoked) === 1,
    addrHost: r.addr_host === null ? null : String(r.addr_host),
    addrPort: r.addr_port === null ? null : Number(r.addr_port),
    addrExpires: r.addr_expires === null ? null : Number(r.addr_expires),
    knock: typeof r.knock_secret === "string" ? r.knock_secret : null,
    reach: decodeStoredReach(r),
  };
}

/** The columns of a publication (reach JSON, its key, the check result) as the stores write them. */
export function reachColumns(reach: PublishedReach | undefined): { json: string | null; key: string | null } {
  if (!reach) return { json: null, key: null };
  const { candidates, relay, relayOnly, expires } = reach;
  return { json: JSON.stringify({ candidates, relay, relayOnly, expires }), key: reach.key };
}

/** The stored publication of a users row; null when absent or unreadable (a damaged row lists no
 * candidates rather than failing the listing). */
function decodeStoredReach(r: Record<string, unknown>): StoredReach | null {
  if (typeof r.reach !== "string" || typeof r.reach_key !== "string") return null;
  try {
    const v = JSON.parse(r.reach) as Record<string, unknown>;
    const candidates = decodeAddressList(v.candidates);
    const relay = v.relay === null ? null : decodeAddressList([v.relay])?.[0] ?? null;
    if (!candidates || typeof v.expires !== "number") return null;
    const ok = typeof r.reach_ok === "string" ? decodeAddressList(JSON.parse(r.reach_ok)) : null;
    return {
      candidates,
      relay,
      relayOnly: v.relayOnly === true,
      expires: v.expires,
      key: r.reach_key,
      reachable: ok,
      checkedAt: ok && r.reach_checked_at !== null ? Number(r.reach_checked_at) : null,
    };
  } catch {
    return null;
  }
}

/** The key of a check: the certificate the publication was made with and the candidate set (order does not
 * matter to what a check finds). */
export function reachKey(fingerprint: string, candidates: Address[]): string {
  const set = candidates.map((a) => `${a.host}|${a.port}`).sort().join(",");
  return createHash("sha256").update(`${fingerprint};${set}`).digest("hex").slice(0, 32);
}

/** Names are ASCII below 0x7f, so [prefix, prefix + "\x7f") is exactly "starts with prefix", with no LIKE
 * wildcards to escape. Returns the bounds of a listing query. */
export function listBounds(
  prefix: string,
  after: string | null,
): { lo: string; loInclusive: boolean; hi: string } {
  const useAfter = after !== null && after >= prefix;
  return { lo: useAfter ? after : prefix, loInclusive: !useAfter, hi: prefix + "\x7f" };
}
