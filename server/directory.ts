/**
 * The directory's API as plain functions of a parsed request: enrollment, renewal, revocation, presence,
 * listing, the CRL and info. No sockets here (http.ts carries requests in and out), so every rule can be
 * tested and benchmarked directly.
 */
import { createHash } from "node:crypto";
import { isIP } from "node:net";
import {
  type CaMaterial,
  canonicalUsername,
  CertificateError,
  checkCsr,
  type CheckedCsr,
  createCrl,
  CsrError,
  derToPem,
  fingerprintOf,
  issueUserCertificateDer,
  normalizeSerial,
  UsernameError,
  type VerifiedPeer,
  verifyPeerCertificate,
  x509,
} from "../pki/mod.ts";
import { ApiError } from "./errors.ts";
import { canonicalPresenceHost } from "./address.ts";
import {
  type DirectoryStore,
  type IssuedCert,
  type PublishedReach,
  reachKey,
  type UserRow,
} from "./store.ts";
import type { ReachProber } from "./reach_probe.ts";
import {
  type Address,
  decodeAddressList,
  decodeKnockSecret,
  type DirectoryInfo,
  type IssuedCertificate,
  MAX_CANDIDATES,
  PHONEBOOK_API_VERSION,
  type PresenceAnswer,
  type RevokeAnswer,
  type RoughtimeServer,
  type UserEntry,
  type UserList,
} from "../contract/mod.ts";
import {
  CRL_REFRESH_MS,
  LIST_DEFAULT_LIMIT,
  LIST_MAX_LIMIT,
  PRESENCE_MAX_TTL_S,
  PRESENCE_MIN_TTL_S,
  REACH_RECHECK_MS,
  RENEW_GRACE_MS,
  RENEWALS_PER_DAY,
  TIME_SERVER_CACHE_MS,
  TIME_SERVER_STALE_MS,
} from "./limits.ts";

const DAY_MS = 24 * 3600 * 1000;

export interface ApiRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  /** Parsed JSON body, or undefined when there was none. */
  body: unknown;
  /** DER of the client certificate presented in the TLS handshake, if any (not yet judged). A function so
   * that routes which do not authenticate never pay for extracting it. */
  peerCertDer: () => Uint8Array | null;
  /** The address the request came from (the phonebook lists it as a candidate of a publication). */
  remoteAddress?: string;
}

export interface ApiResponse {
  status: number;
  json?: unknown;
  bytes?: Uint8Array;
  text?: string;
  contentType?: string;
}

export interface RoughtimeInfo {
  host: string;
  port: number;
  publicKey: string;
}

export interface DirectoryServiceOptions {
  store: DirectoryStore;
  ca: CaMaterial;
  caFingerprint: string;
  inviteOnly: boolean;
  certValidityDays?: number;
  roughtime: RoughtimeInfo | null;
  now?: () => number;
  /** The relay running beside the phonebook: its port (in /v1/info) and who holds a control connection to
   * it now (listed online at once, reachable through it). */
  relay?: { host?: string; port: number; isConnected(name: string): boolean } | null;
  /** The reachability check (reach_probe.ts); null or absent: candidates are listed unchecked. */
  prober?: ReachProber | null;
  /** Where a failed background check is reported (a store error); default console.error. */
  onError?: (e: unknown) => void;
}

function keyIdOf(spki: Uint8Array): string {
  return createHash("sha256").update(spki).digest("hex");
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function requireName(input: unknown): string {
  if (typeof input !== "string") throw new ApiError(400, "BAD_USERNAME", "name must be a string");
  try {
    return canonicalUsername(input);
  } catch (e) {
    if (e instanceof UsernameError) throw new ApiError(400, "BAD_USERNAME", e.message);
    throw e;
  }
}

function csrToApiError(e: unknown): never {
  if (e instanceof CsrError) throw new ApiError(400, e.code, e.message);
  throw e;
}

export class DirectoryService {
  readonly store: DirectoryStore;
  readonly ca: CaMaterial;
  readonly caFingerprint: string;
  readonly inviteOnly: boolean;
  readonly roughtime: RoughtimeInfo | null;
  readonly #validityDays: number | undefined;
  readonly #now: () => number;
  /** The last CRL this process served, by number (saves reading the DER again while it is current). */
  #crl: { number: number; der: Uint8Array } | null = null;
  #crlPending: { revision: number; der: Promise<Uint8Array> } | null = null;
  /** Signature checks of client certificates, by fingerprint: a certificate's signature never changes, while
   * its validity and whether it is still the user's current one are re-checked on every request. */
  #verified = new Map<string, VerifiedPeer>();
  readonly #relay: { host?: string; port: number; isConnected(name: string): boolean } | null;
  readonly #prober: ReachProber | null;
  readonly #onError: (e: unknown) => void;
  /** Checks under way on this node, by user and key (a refresh during a check does not start another). */
  readonly #checking = new Map<string, Promise<void>>();
  /** Every node's Roughtime servers, read from the store at most every TIME_SERVER_CACHE_MS. */
  #timeServers: { at: number; list: RoughtimeServer[] } | null = null;
  /** The first CRL request of a process signs a fresh list (a restart is a new signing run), later ones
   * serve the stored list while it is current. */
  #signedOnce = false;

  constructor(opts: DirectoryServiceOptions) {
    this.store = opts.store;
    this.ca = opts.ca;
    this.caFingerprint = opts.caFingerprint;
    this.inviteOnly = opts.inviteOnly;
    this.roughtime = opts.roughtime;
    this.#validityDays = opts.certValidityDays;
    this.#now = opts.now ?? Date.now;
    this.#relay = opts.relay ?? null;
    this.#prober = opts.prober ?? null;
    this.#onError = opts.onError ?? console.error;
  }

  /** Stops the checks under way (their results are dropped) and waits for them. */
  async close(): Promise<void> {
    await this.#prober?.close();
    await Promise.allSettled([...this.#checking.values()]);
  }

  /** Resolves when every check under way on this node has stored its result (tests). */
  async checksSettled(): Promise<void> {
    while (this.#checking.size > 0) await Promise.allSettled([...this.#checking.values()]);
  }

  /** Starts the reachability check of a publication in the background, unless the same candidates were
   * checked recently (on any node: the result is in the store) or are being checked here. */
  #maybeCheck(
    peer: VerifiedPeer,
    reach: PublishedReach,
    previous: UserRow | null,
    remoteAddress: string | undefined,
    knock: Uint8Array | null,
  ): void {
    const prober = this.#prober;
    if (!prober || reach.relayOnly || reach.candidates.length === 0) return;
    const prev = previous?.reach;
    const fresh = prev && prev.key === reach.key && prev.checkedAt !== null &&
      this.#now() - prev.checkedAt < REACH_RECHECK_MS;
    const id = `${peer.name}|${reach.key}`;
    if (fresh || this.#checking.has(id)) return;
    const run = prober.check({
      name: peer.name,
      fingerprint: peer.fingerprint,
      // The probe knocks like any peer, with the secret of this publication (ours to know: we store it).
      knock,
      candidates: reach.candidates,
      observed: remoteAddress,
    }, MAX_CANDIDATES + 1).then(async (report) => {
      // null: the user's budget is spent (nothing was tried); the next refresh asks again.
      if (report) await this.store.setReachResult(peer.name, reach.key, report.reachable, report.checkedAt);
    }).catch(this.#onError).finally(() => this.#checking.delete(id));
    this.#checking.set(id, run);
  }

  async handle(req: ApiRequest): Promise<ApiResponse> {
    const { method, path } = req;
    const m = /^\/v1\/users\/([^/]*)$/.exec(path);
    const route = m ? "/v1/users/:name" : path;
    const allow = (...methods: string[]) => {
      if (!methods.includes(method)) {
        throw new ApiError(405, "METHOD_NOT_ALLOWED", `${method} is not allowed on ${route}`);
      }
    };
    switch (route) {
      case "/":
      case "/v1/info":
        allow("GET", "HEAD");
        return { status: 200, json: await this.info() };
      case "/v1/ca.pem":
        allow("GET", "HEAD");
        return { status: 200, text: this.ca.certPem, contentType: "application/x-pem-file" };
      case "/v1/crl":
        allow("GET", "HEAD");
        return { status: 200, bytes: await this.crlDer(), contentType: "application/pkix-crl" };
      case "/v1/enroll":
        allow("POST");
        return { status: 201, json: await this.enroll(req.body) };
      case "/v1/renew":
        allow("POST");
        return {
          status: 201,
          json: await this.renew(
            await this.authenticate(req.peerCertDer(), { lapsedGraceMs: RENEW_GRACE_MS }),
            req.body,
          ),
        };
      case "/v1/revoke":
        allow("POST");
        return {
          status: 200,
          json: await this.revoke(await this.authenticate(req.peerCertDer()), req.body),
        };
      case "/v1/presence":
        allow("PUT", "DELETE");
        if (method === "PUT") {
          return {
            status: 200,
            json: await this.publish(await this.authenticate(req.peerCertDer()), req.body, req.remoteAddress),
          };
        }
        return { status: 200, json: await this.withdraw(await this.authenticate(req.peerCertDer())) };
      case "/v1/me": {
        allow("GET");
        const me = await this.authenticate(req.peerCertDer());
        const user = await this.store.getUser(me.name);
        // Freed by an admin between the two reads: the certificate is no longer anyone's.
        if (!user) throw new ApiError(401, "UNAUTHENTICATED", "a current client certificate is required");
        return { status: 200, json: this.entry(user, { withKnock: true }) };
      }
      case "/v1/users":
        allow("GET");
        if (this.inviteOnly) await this.authenticate(req.peerCertDer());
        return { status: 200, json: await this.list(req.query) };
      case "/v1/users/:name": {
        allow("GET");
        // The knock secret goes only to an enrolled caller whose certificate is current (docs/protocol.md
        // "What a scanner learns"); an open phonebook answers anyone else the entry without it.
        const enrolled = this.inviteOnly
          ? await this.authenticate(req.peerCertDer())
          : await this.#authenticatedOrNull(req.peerCertDer());
        let raw: string;
        try {
          raw = decodeURIComponent(m![1]);
        } catch {
          throw new ApiError(400, "BAD_USERNAME", "name is not valid percent-encoding");
        }
        const user = await this.store.getUser(requireName(raw));
        if (!user) throw new ApiError(404, "NOT_FOUND", "no such user");
        return { status: 200, json: this.entry(user, { withKnock: enrolled !== null }) };
      }
      default:
        throw new ApiError(404, "NOT_FOUND", "no such endpoint");
    }
  }

  async info(): Promise<DirectoryInfo> {
    return {
      apiVersion: PHONEBOOK_API_VERSION,
      caCertPem: this.ca.certPem,
      caFingerprint: this.caFingerprint,
      inviteOnly: this.inviteOnly,
      // The Roughtime server runs on this same host: clients use the directory's host name with this port.
      roughtime: this.roughtime
        ? { port: this.roughtime.port, publicKey: this.roughtime.publicKey, version: "rfc" }
        : null,
      relay: this.#relay
        ? { ...(this.#relay.host ? { host: this.#relay.host } : {}), port: this.#relay.port }
        : null,
      // Every node of a multi-node phonebook runs its own Roughtime server (they are independent by
      // design); a client may ask several of them.
      roughtimeServers: await this.timeServers(),
    };
  }

  /** The Roughtime servers announced by the phonebook's nodes recently (this one included). */
  async timeServers(): Promise<RoughtimeServer[]> {
    const now = this.#now();
    const c = this.#timeServers;
    if (c && now - c.at >= 0 && now - c.at < TIME_SERVER_CACHE_MS) return c.list;
    const rows = await this.store.timeServers(now - TIME_SERVER_STALE_MS);
    const list = rows.map((r) => ({
      host: r.host,
      port: r.port,
      publicKey: r.publicKey,
      version: "rfc" as const,
    }));
    this.#timeServers = { at: now, list };
    return list;
  }

  /** Resolves the client certificate to the user it currently belongs to; 401 for anything else (no cert,
   * another CA, expired, revoked, superseded by a renewal). The reason is not told apart on purpose. With
   * `lapsedGraceMs` (renewal only, RENEW_GRACE_MS) a certificate that expired at most that long ago is
   * accepted when everything else about it holds, judged at its last valid moment. */
  /** The caller when it presented a current enrolled certificate, null when it presented none or another. */
  async #authenticatedOrNull(certDer: Uint8Array | null): Promise<VerifiedPeer | null> {
    if (!certDer) return null;
    try {
      return await this.authenticate(certDer);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return null;
      throw e;
    }
  }

  async authenticate(
    certDer: Uint8Array | null,
    opts: { lapsedGraceMs?: number } = {},
  ): Promise<VerifiedPeer & { lapsed: boolean }> {
    const deny = () => new ApiError(401, "UNAUTHENTICATED", "a current client certificate is required");
    if (!certDer) throw deny();
    const grace = opts.lapsedGraceMs ?? 0;
    const fp = fingerprintOf(certDer);
    let peer = this.#verified.get(fp);
    const now = this.#now();
    if (!peer) {
      const verifyAt = (t: number) =>
        verifyPeerCertificate({ certDer, caCertPem: this.ca.certPem, time: { earliestMs: t, latestMs: t } });
      try {
        peer = await verifyAt(now);
      } catch (e) {
        if (!(e instanceof CertificateError)) throw e;
        if (e.code !== "EXPIRED" || grace <= 0) throw deny();
        // Every other check as of its last valid moment; the grace is checked below.
        const notAfter = lapsedNotAfter(certDer);
        if (notAfter === null) throw deny();
        peer = await verifyAt(notAfter).catch(() => {
          throw deny();
        });
      }
      if (this.#verified.size > 10_000) this.#verified.clear();
      this.#verified.set(fp, peer);
    }
    if (!(peer.notBefore <= now && now <= peer.notAfter + grace)) throw deny();
    const user = await this.store.getUser(peer.name);
    if (!user || user.revoked || user.serial !== peer.serial) throw deny();
    return { ...peer, lapsed: now > peer.notAfter };
  }

  async #issue(name: string, csr: CheckedCsr): Promise<IssuedCert> {
    const cert = await issueUserCertificateDer(this.ca, name, csr.spki, {
      nowMs: this.#now(),
      validityDays: this.#validityDays,
    });
    return {
      serial: cert.serial,
      name,
      keyId: keyIdOf(csr.spki),
      // The same text as the library's PEM plus the newline the stored certificates always ended with.
      certPem: derToPem(cert.der, "CERTIFICATE"),
      fingerprint: fingerprintOf(cert.der),
      notAfter: cert.notAfterMs,
    };
  }

  #issuedJson(c: IssuedCert): IssuedCertificate {
    return {
      name: c.name,
      certPem: c.certPem,
      caCertPem: this.ca.certPem,
      fingerprint: c.fingerprint,
      serial: c.serial,
      notAfter: c.notAfter,
    };
  }

  async enroll(body: unknown) {
    if (!isObject(body)) throw new ApiError(400, "BAD_REQUEST", "body must be a JSON object");
    const name = requireName(body.name);
    const token = body.token;
    // In invite-only mode the token is judged before anything that depends on the name, so a caller without
    // a token learns nothing about which names exist.
    if (this.inviteOnly) {
      if (
        typeof token !== "string" || token.length > 200 ||
        await this.store.tokenState(token, this.#now()) !== "valid"
      ) {
        throw new ApiError(403, "BAD_TOKEN", "invitation token is unknown, used or expired");
      }
    }
    const csr = await checkCsr(body.csr, name).catch(csrToApiError);
    // The name is checked inside the store's transaction (another enrollment, on any node, may win it while
    // we sign), and only there: a look-up before signing as well cost a database round trip per enrollment
    // (about 5% of a node's enrollment CPU on PostgreSQL) to spare one signature for a taken name, which the
    // same rate limits as any enrollment bound. The certificate signed for a taken name is never stored nor
    // sent, so no one holds it.
    const issued = await this.#issue(name, csr);
    const outcome = await this.store.enroll(issued, this.#now(), this.inviteOnly ? token as string : null);
    if (outcome === "name_taken") throw nameTaken();
    if (outcome === "bad_token") {
      throw new ApiError(403, "BAD_TOKEN", "invitation token is unknown, used or expired");
    }
    return this.#issuedJson(issued);
  }

  async renew(peer: VerifiedPeer & { lapsed?: boolean }, body: unknown) {
    if (!isObject(body)) throw new ApiError(400, "BAD_REQUEST", "body must be a JSON object");
    if (body.name !== undefined && body.name !== peer.name) {
      throw new ApiError(403, "FORBIDDEN", "a certificate can only renew itself");
    }
    const csr = await checkCsr(body.csr, peer.name).catch(csrToApiError);
    // A lapsed certificate only prolongs its own key: a new key needs a certificate valid now.
    if (peer.lapsed && (await this.store.getUser(peer.name))?.keyId !== keyIdOf(csr.spki)) {
      throw new ApiError(
        403,
        "LAPSED_NEW_KEY",
        "an expired certificate can only be renewed for the same key; a new key needs a valid certificate",
      );
    }
    const tooMany = () =>
      new ApiError(429, "RATE_LIMITED", `at most ${RENEWALS_PER_DAY} certificates a day per user; try later`);
    if (await this.store.certsIssuedSince(peer.name, this.#now() - DAY_MS) >= RENEWALS_PER_DAY) {
      throw tooMany();
    }
    const issued = await this.#issue(peer.name, csr);
    const now = this.#now();
    // Counted again inside the transaction: parallel renewals must not slip past the limit together. One
    // live certificate per user: the old one goes on the CRL as superseded.
    const outcome = await this.store.renew(issued, peer.serial, now, now - DAY_MS, RENEWALS_PER_DAY);
    if (outcome === "stale") {
      throw new ApiError(401, "UNAUTHENTICATED", "a current client certificate is required");
    }
    if (outcome === "rate_limited") throw tooMany();
    return this.#issuedJson(issued);
  }

  async revoke(peer: VerifiedPeer, body: unknown): Promise<RevokeAnswer> {
    if (body !== undefined && !isObject(body)) {
      throw new ApiError(400, "BAD_REQUEST", "body must be a JSON object");
    }
    const b = body ?? {};
    // A serial is a number: any case and leading zeros name the same one (peer.serial is normalised).
    const serialOk = b.serial === undefined ||
      (typeof b.serial === "string" && /^[0-9a-fA-F]{1,42}$/.test(b.serial) &&
        normalizeSerial(b.serial) === peer.serial);
    if ((b.name !== undefined && b.name !== peer.name) || !serialOk) {
      throw new ApiError(403, "FORBIDDEN", "a certificate can only revoke itself");
    }
    await this.store.revokeOwn(peer.name, peer.serial, this.#now());
    return { revoked: peer.serial, name: peer.name };
  }

  async publish(peer: VerifiedPeer, body: unknown, remoteAddress?: string): Promise<PresenceAnswer> {
    if (!isObject(body)) throw new ApiError(400, "BAD_REQUEST", "body must be a JSON object");
    if (body.name !== undefined && body.name !== peer.name) {
      throw new ApiError(403, "FORBIDDEN", "a user can only publish their own address");
    }
    const { port, ttlSeconds } = body;
    const relayOnly = body.relayOnly === true;
    // Relay-only: no address of the user's is taken (nor the one the request came from).
    const host = relayOnly ? "" : canonicalPresenceHost(body.host);
    if (!relayOnly && (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535)) {
      throw new ApiError(400, "BAD_ADDRESS", "port must be an integer 1-65535");
    }
    if (
      typeof ttlSeconds !== "number" || !Number.isInteger(ttlSeconds) || ttlSeconds < PRESENCE_MIN_TTL_S ||
      ttlSeconds > PRESENCE_MAX_TTL_S
    ) {
      throw new ApiError(
        400,
        "BAD_ADDRESS",
        `ttlSeconds must be an integer ${PRESENCE_MIN_TTL_S}-${PRESENCE_MAX_TTL_S}`,
      );
    }
    let candidates: Address[] = [];
    if (!relayOnly) {
      const listed = body.candidates === undefined ? [] : decodeAddressList(body.candidates);
      if (listed === null || listed.length > MAX_CANDIDATES) {
        throw new ApiError(
          400,
          "BAD_ADDRESS",
          `candidates must be a list of at most ${MAX_CANDIDATES} addresses`,
        );
      }
      candidates = dedupe([
        // The user's own list first (its first entry is host/port, with what it says about it, e.g. a
        // mapping); host/port itself for a client that sends no list.
        ...listed.map((a) => ({ ...a, host: canonicalPresenceHost(a.host) })),
        { host, port: port as number },
        // Where the request came from, with the published port: a public address, or a NAT that keeps the
        // port (a mapping, a 1:1 NAT). Listed last: the user's own candidates are what it knows best.
        ...observedCandidate(remoteAddress, port as number),
      ]).slice(0, MAX_CANDIDATES + 1);
    }
    let relay: Address | null = null;
    if (body.relay !== undefined && body.relay !== null) {
      const r = decodeAddressList([body.relay]);
      if (!r) throw new ApiError(400, "BAD_ADDRESS", "relay must be an address");
      relay = { host: canonicalPresenceHost(r[0].host), port: r[0].port };
    }
    if (relayOnly && !relay && !this.#relay) {
      throw new ApiError(400, "BAD_ADDRESS", "relay-only needs a relay (this phonebook runs none)");
    }
    let knock: string | null = null;
    if (body.knock !== undefined) {
      if (!decodeKnockSecret(body.knock)) {
        throw new ApiError(400, "BAD_REQUEST", "knock must be base64url of 32 bytes");
      }
      knock = body.knock as string;
    }
    const expires = this.#now() + ttlSeconds * 1000;
    const reach: PublishedReach = {
      candidates,
      relay,
      relayOnly,
      expires,
      key: reachKey(peer.fingerprint, candidates),
    };
    // Whether the same candidates were checked lately (read only when there is a check to run).
    const previous = this.#prober && !relayOnly ? await this.store.getUser(peer.name) : null;
    // The expiry is an instant in the store, so every node judges it the same way; the candidates, relay
    // and check result are stored with it, so every node lists the same (docs/protocol.md, Reachability).
    if (relayOnly) await this.store.clearPresence(peer.name, reach);
    else await this.store.setPresence(peer.name, host, port as number, expires, reach);
    // A publication without a secret (an older client) clears an earlier one: its listener takes no knock.
    await this.store.setKnock(peer.name, knock);
    this.#maybeCheck(peer, reach, previous, remoteAddress, knock ? decodeKnockSecret(knock) : null);
    return {
      name: peer.name,
      address: relayOnly ? null : { host, port: port as number },
      expiresAt: expires,
    };
  }

  async withdraw(peer: VerifiedPeer): Promise<PresenceAnswer> {
    await this.store.clearPresence(peer.name);
    await this.store.setKnock(peer.name, null);
    return { name: peer.name, address: null };
  }

  async list(query: URLSearchParams): Promise<UserList> {
    const prefix = query.get("prefix") ?? "";
    if (!/^[a-z0-9_-]{0,32}$/.test(prefix)) {
      throw new ApiError(400, "BAD_REQUEST", "prefix may contain only a-z, 0-9, '-' and '_'");
    }
    const limitRaw = query.get("limit");
    const limit = limitRaw === null ? LIST_DEFAULT_LIMIT : Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 1 || limit > LIST_MAX_LIMIT) {
      throw new ApiError(400, "BAD_REQUEST", `limit must be an integer 1-${LIST_MAX_LIMIT}`);
    }
    const cursor = query.get("cursor");
    let after: string | null = null;
    if (cursor !== null && cursor !== "") {
      if (!/^[a-z0-9][a-z0-9_-]{2,31}$/.test(cursor)) throw new ApiError(400, "BAD_REQUEST", "bad cursor");
      after = cursor;
    }
    // One extra row tells whether there is a next page without a second query.
    const rows = await this.store.listUsers(prefix, after, limit + 1);
    const page = rows.slice(0, limit);
    return {
      users: page.map((u) => this.entry(u)),
      next: rows.length > limit ? page[page.length - 1].name : null,
    };
  }

  /** The user's entry; the knock secret only with `withKnock` (an authenticated enrolled caller), and only
   * while the user is online (a secret of a run that ended opens nothing). */
  entry(u: UserRow, opts: { withKnock?: boolean } = {}): UserEntry {
    const now = this.#now();
    const listed = !u.revoked && u.addrExpires !== null && u.addrExpires > now && u.addrHost !== null;
    const reach = u.reach && u.reach.expires > now ? u.reach : null;
    const address = listed ? { host: u.addrHost!, port: u.addrPort! } : null;
    // Through our own relay when it holds the user's control connection, else the relay the user named.
    const viaOurRelay = !u.revoked && this.#relay?.isConnected(u.name) === true;
    const relayOnly = reach?.relayOnly === true && !u.revoked;
    // The relay to reach the user through: the one it published, else ours while it holds a connection to it.
    const relay = u.revoked ? null : reach?.relay ??
      (viaOurRelay && this.#relay?.host ? { host: this.#relay.host, port: this.#relay.port } : null);
    const online = listed || viaOurRelay || (relayOnly && relay !== null);
    return {
      name: u.name,
      online,
      address,
      candidates: address ? (reach?.candidates ?? [address]) : [],
      reachable: address ? (reach?.reachable ?? []) : [],
      reachCheckedAt: address ? (reach?.checkedAt ?? null) : null,
      relay,
      certPem: u.certPem,
      fingerprint: u.fingerprint,
      revoked: u.revoked,
      notAfter: u.notAfter,
      knock: opts.withKnock === true && online ? u.knock : null,
    };
  }

  /** The signed CRL. All nodes share the last one signed (in the store), so a client switching nodes never
   * sees a lower CRL Number; it is re-made when a revocation happened (on any node, or by an admin command),
   * when it is an hour old, or at the first request of this process. */
  async crlDer(): Promise<Uint8Array> {
    const now = this.#now();
    const state = await this.store.crlState();
    const c = this.#crl;
    const current = (s: { revision: number; madeAt: number }) =>
      s.revision === state.revision && now - s.madeAt >= 0 && now - s.madeAt < CRL_REFRESH_MS;
    if (this.#signedOnce && state.crl && current(state.crl)) {
      if (c && c.number === state.crl.number) return c.der;
      const stored = await this.store.storedCrl();
      if (stored && current(stored)) {
        this.#crl = { number: stored.number, der: stored.der };
        return stored.der;
      }
    }
    // A signing run already under way for an older revision would miss the newest revocation: wait for it,
    // then sign again.
    if (this.#crlPending && this.#crlPending.revision !== state.revision) {
      await this.#crlPending.der.catch(() => {});
      return await this.crlDer();
    }
    if (!this.#crlPending) {
      this.#crlPending = {
        revision: state.revision,
        der: (async () => {
          try {
            const entries = (await this.store.revokedCerts(now)).map((r) => ({
              serial: r.serial,
              revokedAtMs: r.revokedAt,
            }));
            const number = await this.store.nextCrlNumber();
            const crl = await createCrl(this.ca, entries, now, { crlNumber: number });
            const der = new Uint8Array(crl.rawData);
            // Another node may have stored a higher-numbered list meanwhile; ours still is a valid, current
            // list, and the next request serves the stored one.
            await this.store.saveCrl({ number, revision: state.revision, madeAt: now, der });
            this.#signedOnce = true;
            this.#crl = { number, der };
            return der;
          } finally {
            this.#crlPending = null;
          }
        })(),
      };
    }
    return await this.#crlPending.der;
  }
}

function dedupe(list: Address[]): Address[] {
  const seen = new Set<string>();
  return list.filter((a) => {
    const k = `${a.host}|${a.port}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** The request's source as a candidate; none when it is not one a peer could use. */
function observedCandidate(remoteAddress: string | undefined, port: number): Address[] {
  if (!remoteAddress || isIP(remoteAddress) === 0) return [];
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
  try {
    return [{ host: canonicalPresenceHost(v4 ? v4[1] : remoteAddress), port }];
  } catch {
    return [];
  }
}

function nameTaken(): ApiError {
  return new ApiError(
    409,
    "NAME_TAKEN",
    "this name is taken; a new certificate for it needs the current key (renew) or an admin",
  );
}

/** Admin: revokes the user's current certificate; with `release`, also frees the name for a new key. */
export async function adminRevoke(store: DirectoryStore, name: string, release: boolean, nowMs = Date.now()) {
  const r = await store.adminRevoke(name, release, nowMs);
  return r ? { name, serial: r.serial, released: release } : null;
}

/** The notAfter of a certificate (Unix ms), or null when it does not parse. */
function lapsedNotAfter(der: Uint8Array): number | null {
  try {
    return new x509.X509Certificate(new Uint8Array(der)).notAfter.getTime();
  } catch {
    return null;
  }
}
