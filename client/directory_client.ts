/**
 * Client of the directory's HTTPS JSON API. TLS trusts only the directory's CA (pinned at enrollment); when
 * a certificate and key are given they are presented as a client certificate, which is how the authenticated
 * calls (publish, withdraw, renew, revoke) prove who is asking.
 */
import { type ParsedCrl, verifyCrl } from "../pki/mod.ts";

export interface UserEntry {
  name: string;
  online: boolean;
  address: { host: string; port: number } | null;
  certPem: string;
  fingerprint: string;
  revoked: boolean;
}

export interface DirectoryInfo {
  apiVersion: number;
  caCertPem: string;
  caFingerprint: string;
  roughtime: { port: number; publicKey: string } | null;
}

export interface IssuedCertificate {
  name: string;
  certPem: string;
  caCertPem: string;
  fingerprint: string;
  serial: string;
  notAfter: number;
}

/** Codes of the server's API errors, plus UNREACHABLE (network or TLS failure) and BAD_RESPONSE. */
export class DirectoryError extends Error {
  constructor(readonly code: string, message: string, readonly status: number | null = null) {
    super(message);
    this.name = "DirectoryError";
  }
}

/** Client-side bound on a directory answer; the listing of 200 users with certificates fits easily. */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 15_000;
const MAX_RETRY_AFTER_S = 2;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function toEntry(v: unknown): UserEntry {
  if (!isObject(v) || typeof v.name !== "string" || typeof v.certPem !== "string") {
    throw new DirectoryError("BAD_RESPONSE", "directory sent a malformed user entry");
  }
  const a = v.address;
  const address = isObject(a) && typeof a.host === "string" && typeof a.port === "number"
    ? { host: a.host, port: a.port }
    : null;
  return {
    name: v.name,
    online: v.online === true && address !== null,
    address,
    certPem: v.certPem,
    fingerprint: String(v.fingerprint ?? ""),
    revoked: v.revoked === true,
  };
}

export class DirectoryClient {
  readonly url: string;
  readonly #client: Deno.HttpClient;
  readonly #caPem: string;

  constructor(opts: { url: string; caPem: string; certPem?: string; keyPem?: string }) {
    this.url = opts.url.replace(/\/+$/, "");
    this.#caPem = opts.caPem;
    this.#client = opts.certPem && opts.keyPem
      ? Deno.createHttpClient({ caCerts: [opts.caPem], cert: opts.certPem, key: opts.keyPem })
      : Deno.createHttpClient({ caCerts: [opts.caPem] });
  }

  async #request(method: string, path: string, body?: unknown): Promise<Response> {
    const res = await this.#fetch(method, path, body);
    // A polite client waits as told, once, when the wait is short; longer waits are the caller's decision.
    const wait = Number(res.headers.get("retry-after"));
    if (res.status === 429 && wait > 0 && wait <= MAX_RETRY_AFTER_S) {
      await res.body?.cancel();
      await new Promise((r) => setTimeout(r, wait * 1000));
      return await this.#check(await this.#fetch(method, path, body));
    }
    return await this.#check(res);
  }

  async #fetch(method: string, path: string, body?: unknown): Promise<Response> {
    let res: Response;
    try {
      // `client` is Deno's extension of RequestInit (absent from the DOM typings this project also loads).
      const init: RequestInit & { client: Deno.HttpClient } = {
        method,
        client: this.#client,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      };
      res = await fetch(this.url + path, init);
    } catch (e) {
      throw new DirectoryError(
        "UNREACHABLE",
        `cannot reach the directory at ${this.url}: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    return res;
  }

  async #check(res: Response): Promise<Response> {
    if (!res.ok) {
      let code = "HTTP_" + res.status;
      let message = `directory answered ${res.status}`;
      try {
        const j = await res.json() as { error?: { code?: unknown; message?: unknown } };
        if (typeof j.error?.code === "string") code = j.error.code;
        if (typeof j.error?.message === "string") message = j.error.message;
      } catch { /* not JSON: keep the generic message */ }
      throw new DirectoryError(code, message, res.status);
    }
    const len = Number(res.headers.get("content-length") ?? "0");
    if (len > MAX_RESPONSE_BYTES) {
      await res.body?.cancel();
      throw new DirectoryError("BAD_RESPONSE", "directory answer is too large");
    }
    return res;
  }

  async #json(method: string, path: string, body?: unknown): Promise<unknown> {
    const res = await this.#request(method, path, body);
    try {
      return await res.json();
    } catch {
      throw new DirectoryError("BAD_RESPONSE", "directory answer is not JSON");
    }
  }

  async info(): Promise<DirectoryInfo> {
    const j = await this.#json("GET", "/v1/info");
    if (!isObject(j) || typeof j.apiVersion !== "number" || typeof j.caCertPem !== "string") {
      throw new DirectoryError("BAD_RESPONSE", "directory info is malformed");
    }
    const rt = j.roughtime;
    return {
      apiVersion: j.apiVersion,
      caCertPem: j.caCertPem,
      caFingerprint: String(j.caFingerprint ?? ""),
      roughtime: isObject(rt) && typeof rt.port === "number" && typeof rt.publicKey === "string"
        ? { port: rt.port, publicKey: rt.publicKey }
        : null,
    };
  }

  /** Publishes our address (authenticated: the name comes from our certificate). */
  async publish(host: string, port: number, ttlSeconds: number): Promise<void> {
    await this.#json("PUT", "/v1/presence", { host, port, ttlSeconds });
  }

  async withdraw(): Promise<void> {
    await this.#json("DELETE", "/v1/presence");
  }

  /** The user's entry, or null when there is no such user. */
  async lookup(name: string): Promise<UserEntry | null> {
    try {
      return toEntry(await this.#json("GET", `/v1/users/${encodeURIComponent(name)}`));
    } catch (e) {
      if (e instanceof DirectoryError && e.code === "NOT_FOUND") return null;
      throw e;
    }
  }

  async list(opts: { prefix?: string; cursor?: string; limit?: number } = {}): Promise<{
    users: UserEntry[];
    next: string | null;
  }> {
    const q = new URLSearchParams();
    if (opts.prefix) q.set("prefix", opts.prefix);
    if (opts.cursor) q.set("cursor", opts.cursor);
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    const qs = q.toString();
    const j = await this.#json("GET", `/v1/users${qs ? "?" + qs : ""}`);
    if (!isObject(j) || !Array.isArray(j.users)) {
      throw new DirectoryError("BAD_RESPONSE", "listing is malformed");
    }
    return { users: j.users.map(toEntry), next: typeof j.next === "string" ? j.next : null };
  }

  /** Revoked serials (normalised hex) from the CRL, after checking the CRL's signature with our CA. */
  async revokedSerials(): Promise<Set<string>> {
    return (await this.crl()).revokedSerials;
  }

  /** The verified CRL with its thisUpdate/nextUpdate, for callers that judge its freshness on trusted time. */
  async crl(): Promise<ParsedCrl> {
    const res = await this.#request("GET", "/v1/crl");
    const der = new Uint8Array(await res.arrayBuffer());
    try {
      return await verifyCrl(der, this.#caPem);
    } catch (e) {
      throw new DirectoryError("BAD_CRL", e instanceof Error ? e.message : String(e));
    }
  }

  /** Enrollment of a new name (unauthenticated, but possibly with an invitation token). */
  async enroll(name: string, csrPem: string, token?: string): Promise<IssuedCertificate> {
    return toIssued(
      await this.#json("POST", "/v1/enroll", { name, csr: csrPem, ...(token ? { token } : {}) }),
    );
  }

  /** A new certificate for our name (authenticated with the current one). */
  async renew(csrPem: string): Promise<IssuedCertificate> {
    return toIssued(await this.#json("POST", "/v1/renew", { csr: csrPem }));
  }

  /** Revokes our current certificate (authenticated). */
  async revoke(): Promise<{ name: string; revoked: string }> {
    const j = await this.#json("POST", "/v1/revoke", {});
    if (!isObject(j) || typeof j.revoked !== "string" || typeof j.name !== "string") {
      throw new DirectoryError("BAD_RESPONSE", "revocation answer is malformed");
    }
    return { name: j.name, revoked: j.revoked };
  }

  close(): void {
    this.#client.close();
  }
}

function toIssued(j: unknown): IssuedCertificate {
  if (
    !isObject(j) || typeof j.certPem !== "string" || typeof j.caCertPem !== "string" ||
    typeof j.name !== "string"
  ) {
    throw new DirectoryError("BAD_RESPONSE", "enrollment answer is malformed");
  }
  return {
    name: j.name,
    certPem: j.certPem,
    caCertPem: j.caCertPem,
    fingerprint: String(j.fingerprint ?? ""),
    serial: String(j.serial ?? ""),
    notAfter: Number(j.notAfter ?? 0),
  };
}
