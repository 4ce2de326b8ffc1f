/**
 * Client of the directory's HTTPS JSON API. TLS trusts only the directory's CA (pinned at enrollment); when
 * a certificate and key are given they are presented as a client certificate, which is how the authenticated
 * calls (publish, withdraw, renew, revoke) prove who is asking.
 *
 * The server's certificate is judged here, not by the TLS stack: the stack would judge validity on the local
 * clock, which the user (or an attacker) can move by a year, so it is told not to judge (`rejectUnauthorized:
 * false`) and every connection is checked before the first byte of a request is written to it: signed by
 * the pinned CA, the name we dialled, the directory's own certificate (not a user's), and valid, with the CA,
 * over the whole interval of `certTime` (the trusted clock when it is verified). The TLS client still checks
 * that the server holds the certificate's key (its CertificateVerify) in that mode: tests/
 * directory_server_proof_test.ts proves it with a hand-made server that presents the certificate without it.
 */
import https from "node:https";
import net from "node:net";
import tls, { type PeerCertificate } from "node:tls";
import type { Duplex } from "node:stream";
import { type KeyObject, X509Certificate } from "node:crypto";
import {
  checkCaCertificate,
  derToPem,
  type ParsedCrl,
  pemToDer,
  RELAY_CN,
  verifyCrl,
  x509,
} from "../pki/mod.ts";
import { CodedError, codeOf } from "../coded_error.ts";
import {
  ContractError,
  decodeDirectoryInfo,
  decodeErrorBody,
  decodeIssuedCertificate,
  decodeRevokeAnswer,
  decodeUserEntry,
  decodeUserList,
  type DirectoryInfo,
  type IssuedCertificate,
  type PublishRequest,
  type RevokeAnswer,
  type UserEntry,
  type UserList,
} from "../contract/mod.ts";

export type { DirectoryInfo, IssuedCertificate, UserEntry, UserList } from "../contract/mod.ts";

/** Codes of the server's API errors, plus UNREACHABLE (network failure), BAD_SERVER_CERTIFICATE (the server is
 * not vouched for by the pinned CA, or not for the name we dialled) and BAD_RESPONSE. */
export class DirectoryError extends CodedError {
  constructor(code: string, message: string, readonly status: number | null = null) {
    super(code, message);
  }
}

/** Client-side bound on a directory answer; the listing of 200 users with certificates fits easily. */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 15_000;
const MAX_RETRY_AFTER_S = 2;
const CLIENT_POOL_IDLE_MS = 20_000;
const MAX_SOCKETS = 4;

/** The server presented a certificate that is not from the pinned CA, or not the directory's. */
class ServerCertificateError extends Error {}

/** The CA gives serverAuth without clientAuth only to the directory's own certificate (pki/ca.ts
 * issueServerCertificate); every user certificate has both, so that users can dial and listen. */
function isDirectoryCertificate(der: Uint8Array): boolean {
  try {
    const cert = new x509.X509Certificate(new Uint8Array(der));
    const usages = (cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages ?? []).map(String);
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    // A standalone relay's certificate is a server certificate too, but never the directory's.
    const relay = cert.subjectName.getField("CN").includes(RELAY_CN);
    return usages.includes(x509.ExtendedKeyUsage.serverAuth) &&
      !usages.includes(x509.ExtendedKeyUsage.clientAuth) && !bc?.ca && !relay;
  } catch {
    return false;
  }
}

/** Runs a contract decoder; a malformed answer is DirectoryError BAD_RESPONSE. */
function decoded<T>(decode: (v: unknown) => T, v: unknown): T {
  try {
    return decode(v);
  } catch (e) {
    if (e instanceof ContractError) throw new DirectoryError("BAD_RESPONSE", e.message);
    throw e;
  }
}

/** One HTTP answer, fully read (bounded by MAX_RESPONSE_BYTES). */
interface RawResponse {
  status: number;
  retryAfter: number;
  body: Uint8Array;
}

/** The interval the server certificate's validity is judged on (Unix ms). */
export type CertTime = () => { earliestMs: number; latestMs: number };

export interface DirectoryClientOptions {
  url: string;
  caPem: string;
  certPem?: string;
  keyPem?: string;
  /** Default: the local clock. The chat engine passes its trusted clock (local clock until verified). */
  certTime?: CertTime;
}

/** An agent whose every connection is checked (DirectoryClient #verify) before https writes to it: node's
 * checkServerIdentity does not stop a request when `rejectUnauthorized` is false, so the check happens in
 * the (asynchronous) createConnection, which hands the socket over only once it passed. */
class CheckedAgent extends https.Agent {
  constructor(
    opts: https.AgentOptions,
    readonly tlsOptions: tls.ConnectionOptions,
    readonly verify: (host: string, s: tls.TLSSocket) => Promise<Error | undefined>,
  ) {
    super(opts);
  }

  /** Node's asynchronous form (the agent waits for `cb` when nothing is returned); its type declarations
   * only know the synchronous one, hence the casts. */
  override createConnection(
    options: https.RequestOptions,
    cb?: (err: Error | null, socket: Duplex) => void,
  ): Duplex {
    const host = options.host ?? "localhost";
    const s = tls.connect({
      ...this.tlsOptions,
      host,
      port: Number(options.port),
      ...(net.isIP(host) ? {} : { servername: options.servername || host }),
    });
    let settled = false;
    const done = (err: Error | null) => {
      if (settled) return;
      settled = true;
      if (err) {
        s.destroy();
        cb?.(err, undefined as unknown as Duplex);
      } else cb?.(null, s);
    };
    s.once("secureConnect", () => {
      this.verify(host, s).then((err) => done(err ?? null), (e) => done(e as Error));
    });
    s.once("error", (e: Error) => done(e));
    return undefined as unknown as Duplex;
  }
}

export class DirectoryClient {
  readonly url: string;
  #agent: https.Agent;
  /** Agents replaced by setClientCertificate: requests in flight on them finish; destroyed at close. */
  readonly #retired: https.Agent[] = [];
  /** The client certificate the agent presents (none before enrollment). */
  #credentials: { certPem?: string; keyPem?: string };
  /** Timers that destroy agents retired by dropConnections. */
  readonly #retiring = new Set<ReturnType<typeof setTimeout>>();
  readonly #caPem: string;
  readonly #caKey: KeyObject;
  readonly #caCert: x509.X509Certificate;
  #certTime: CertTime;

  constructor(opts: DirectoryClientOptions) {
    this.url = opts.url.replace(/\/+$/, "");
    // Exactly one CA, re-encoded: TLS and node:crypto would also read a block our PEM reader (and so the
    // fingerprint check) skips, e.g. one whose lines end in spaces. Throws PkiError("BAD_PEM") otherwise.
    this.#caPem = derToPem(pemToDer(opts.caPem, "CERTIFICATE"), "CERTIFICATE");
    this.#caKey = new X509Certificate(this.#caPem).publicKey;
    this.#caCert = new x509.X509Certificate(pemToDer(this.#caPem, "CERTIFICATE"));
    this.#certTime = opts.certTime ?? (() => ({ earliestMs: Date.now(), latestMs: Date.now() }));
    // node:https rather than fetch: fetch adds its built-in public roots to any CA it is given, while the
    // directory must be reached only through a certificate from OUR CA (checked in #verify).
    this.#credentials = { certPem: opts.certPem, keyPem: opts.keyPem };
    this.#agent = this.#makeAgent(opts.certPem, opts.keyPem);
  }

  #makeAgent(certPem?: string, keyPem?: string): https.Agent {
    return new CheckedAgent(
      {
        keepAlive: true,
        maxSockets: MAX_SOCKETS,
        // Idle sockets are dropped before the server's idle timeout (30 s) would close them under a request.
        timeout: CLIENT_POOL_IDLE_MS,
      },
      {
        ca: [this.#caPem],
        rejectUnauthorized: false,
        ...(certPem && keyPem ? { cert: certPem, key: keyPem } : {}),
      },
      (host, s) => this.#verify(host, s),
    );
  }

  /** Presents another client certificate from the next request on (after a renewal): pooled connections
   * authenticated with the old one are not reused. */
  setClientCertificate(certPem: string, keyPem: string): void {
    this.#credentials = { certPem, keyPem };
    this.#retired.push(this.#agent);
    this.#agent = this.#makeAgent(certPem, keyPem);
  }

  /** Our network changed: the next request opens a new connection. A pooled one may leave from an address
   * we no longer have, and a request on it would wait its whole timeout; requests in flight finish (or
   * time out) on the old agent, whose idle connections close by themselves. */
  dropConnections(): void {
    const old = this.#agent;
    this.#retired.push(old);
    this.#agent = this.#makeAgent(this.#credentials.certPem, this.#credentials.keyPem);
    // Once whatever was in flight on it has answered or timed out, it goes (a laptop changes networks
    // several times a day: the retired agents must not pile up until exit).
    const t = setTimeout(() => {
      this.#retiring.delete(t);
      old.destroy();
      const i = this.#retired.indexOf(old);
      if (i >= 0) this.#retired.splice(i, 1);
    }, REQUEST_TIMEOUT_MS + 1000);
    this.#retiring.add(t);
  }

  /** Judges the server certificate on another clock from now on (the engine's, once it runs). */
  setCertTime(certTime: CertTime): void {
    this.#certTime = certTime;
  }

  /** The whole check of a new connection: #checkServer, then validity of the certificate and of the CA over
   * the trusted interval. */
  async #verify(host: string, s: tls.TLSSocket): Promise<Error | undefined> {
    const cert = s.getPeerCertificate(true);
    if (!cert?.raw) return new ServerCertificateError("the directory presented no certificate");
    const err = this.#checkServer(host, cert);
    if (err) return err;
    const t = this.#certTime();
    let leaf: x509.X509Certificate;
    try {
      leaf = new x509.X509Certificate(new Uint8Array(cert.raw));
    } catch {
      return new ServerCertificateError("the directory's certificate cannot be parsed");
    }
    if (!(leaf.notBefore.getTime() <= t.earliestMs)) {
      return new ServerCertificateError(
        `the directory's certificate is not valid before ${leaf.notBefore.toISOString()} (judged at ${
          new Date(t.earliestMs).toISOString()
        })`,
      );
    }
    if (!(t.latestMs <= leaf.notAfter.getTime())) {
      return new ServerCertificateError(
        `the directory's certificate expired at ${leaf.notAfter.toISOString()} (judged at ${
          new Date(t.latestMs).toISOString()
        })`,
      );
    }
    try {
      await checkCaCertificate(this.#caCert, t);
    } catch (e) {
      return new ServerCertificateError(`the pinned CA is not valid now: ${(e as Error).message}`);
    }
    return undefined;
  }

  /** The server's certificate must carry the host name we dialled, be signed by the pinned CA, AND be the
   * directory's own: the same CA signs user certificates, which also allow serverAuth and whose name can be
   * a host name ("localhost" is a valid username and the default --hostname). */
  #checkServer(host: string, cert: PeerCertificate): Error | undefined {
    const err = tls.checkServerIdentity(host, cert);
    if (err) return err;
    let ok = false;
    try {
      ok = new X509Certificate(cert.raw).verify(this.#caKey);
    } catch {
      ok = false;
    }
    if (!ok) return new ServerCertificateError("the directory's TLS certificate is not from the pinned CA");
    if (!isDirectoryCertificate(new Uint8Array(cert.raw))) {
      return new ServerCertificateError("the server presented a user's certificate, not the directory's");
    }
    return undefined;
  }

  #send(method: string, path: string, body?: unknown): Promise<RawResponse> {
    const payload = body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = https.request(this.url + path, {
        method,
        agent: this.#agent,
        headers: payload
          ? { "content-type": "application/json", "content-length": String(payload.length) }
          : {},
      }, (res) => {
        const chunks: Uint8Array[] = [];
        let size = 0;
        res.on("data", (c: Uint8Array) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy(new DirectoryError("BAD_RESPONSE", "directory answer is too large"));
            return;
          }
          chunks.push(c);
        });
        res.on("end", () => {
          const out = new Uint8Array(size);
          let o = 0;
          for (const c of chunks) {
            out.set(c, o);
            o += c.length;
          }
          resolve({
            status: res.statusCode ?? 0,
            retryAfter: Number(res.headers["retry-after"] ?? 0),
            body: out,
          });
        });
        res.on("error", (e: Error) => reject(this.#transportError(e)));
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error("request timed out")));
      req.on("error", (e: Error) => reject(this.#transportError(e)));
      req.end(payload);
    });
  }

  #transportError(e: Error): DirectoryError {
    if (e instanceof DirectoryError) return e;
    if (e instanceof ServerCertificateError || /CERT|SIGNATURE|ALTNAME/.test(codeOf(e) ?? "")) {
      return new DirectoryError(
        "BAD_SERVER_CERTIFICATE",
        `refusing the directory at ${this.url}: ${e.message} (wrong server, or someone in between)`,
      );
    }
    return new DirectoryError("UNREACHABLE", `cannot reach the directory at ${this.url}: ${e.message}`);
  }

  async #request(method: string, path: string, body?: unknown): Promise<RawResponse> {
    let res = await this.#send(method, path, body);
    // A polite client waits as told, once, when the wait is short; longer waits are the caller's decision.
    if (res.status === 429 && res.retryAfter > 0 && res.retryAfter <= MAX_RETRY_AFTER_S) {
      await new Promise((r) => setTimeout(r, res.retryAfter * 1000));
      res = await this.#send(method, path, body);
    }
    if (res.status < 200 || res.status > 299) {
      let code = "HTTP_" + res.status;
      let message = `directory answered ${res.status}`;
      try {
        const err = decodeErrorBody(JSON.parse(new TextDecoder().decode(res.body)));
        if (err) ({ code, message } = err);
      } catch { /* not JSON: keep the generic message */ }
      throw new DirectoryError(code, message, res.status);
    }
    return res;
  }

  async #json(method: string, path: string, body?: unknown): Promise<unknown> {
    const res = await this.#request(method, path, body);
    try {
      return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(res.body));
    } catch {
      throw new DirectoryError("BAD_RESPONSE", "directory answer is not JSON");
    }
  }

  async info(): Promise<DirectoryInfo> {
    return decoded(decodeDirectoryInfo, await this.#json("GET", "/v1/info"));
  }

  /** Publishes our address (authenticated: the name comes from our certificate); with `reach`, every
   * candidate and the relay too (or, relay-only, no address of ours at all). */
  async publish(
    host: string,
    port: number,
    ttlSeconds: number,
    reach?: {
      candidates: { host: string; port: number }[];
      relay: { host: string; port: number } | null;
      relayOnly: boolean;
      knock?: string;
    },
  ): Promise<void> {
    const body: PublishRequest = { host, port, ttlSeconds };
    if (reach) {
      body.candidates = reach.candidates;
      body.relay = reach.relay;
      if (reach.relayOnly) body.relayOnly = true;
      if (reach.knock) body.knock = reach.knock;
    }
    await this.#json("PUT", "/v1/presence", body);
  }

  /** The phonebook's relay (on the phonebook's host), or null when it runs none. */
  async relayAddress(): Promise<{ host: string; port: number } | null> {
    const info = await this.info();
    if (!info.relay) return null;
    const host = info.relay.host ?? new URL(this.url).hostname.replace(/^\[|\]$/g, "");
    return { host, port: info.relay.port };
  }

  async withdraw(): Promise<void> {
    await this.#json("DELETE", "/v1/presence");
  }

  /** The user's entry, or null when there is no such user. */
  async lookup(name: string): Promise<UserEntry | null> {
    try {
      return decoded(decodeUserEntry, await this.#json("GET", `/v1/users/${encodeURIComponent(name)}`));
    } catch (e) {
      if (e instanceof DirectoryError && e.code === "NOT_FOUND") return null;
      throw e;
    }
  }

  async list(opts: { prefix?: string; cursor?: string; limit?: number } = {}): Promise<UserList> {
    const q = new URLSearchParams();
    if (opts.prefix) q.set("prefix", opts.prefix);
    if (opts.cursor) q.set("cursor", opts.cursor);
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    const qs = q.toString();
    return decoded(decodeUserList, await this.#json("GET", `/v1/users${qs ? "?" + qs : ""}`));
  }

  /** Revoked serials (normalised hex) from the CRL, after checking the CRL's signature with our CA. */
  async revokedSerials(): Promise<Set<string>> {
    return (await this.crl()).revokedSerials;
  }

  /** The verified CRL with its thisUpdate/nextUpdate, for callers that judge its freshness on trusted time. */
  async crl(): Promise<ParsedCrl> {
    const der = (await this.#request("GET", "/v1/crl")).body;
    try {
      return await verifyCrl(der, this.#caPem);
    } catch (e) {
      throw new DirectoryError("BAD_CRL", e instanceof Error ? e.message : String(e));
    }
  }

  /** Enrollment of a new name (unauthenticated, but possibly with an invitation token). */
  async enroll(name: string, csrPem: string, token?: string): Promise<IssuedCertificate> {
    return decoded(
      decodeIssuedCertificate,
      await this.#json("POST", "/v1/enroll", { name, csr: csrPem, ...(token ? { token } : {}) }),
    );
  }

  /** A new certificate for our name (authenticated with the current one). */
  async renew(csrPem: string): Promise<IssuedCertificate> {
    return decoded(decodeIssuedCertificate, await this.#json("POST", "/v1/renew", { csr: csrPem }));
  }

  /** Revokes our current certificate (authenticated). */
  async revoke(): Promise<RevokeAnswer> {
    return decoded(decodeRevokeAnswer, await this.#json("POST", "/v1/revoke", {}));
  }

  close(): void {
    for (const t of this.#retiring) clearTimeout(t);
    this.#retiring.clear();
    this.#agent.destroy();
    for (const a of this.#retired.splice(0)) a.destroy();
  }
}
