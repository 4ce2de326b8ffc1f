/**
 * HTTPS transport for the directory. node:https (not Deno.serve) because authenticated calls use mutual TLS:
 * the server asks for a client certificate but lets the handshake succeed without one (rejectUnauthorized:
 * false), and the application judges the certificate itself per route (DirectoryService.authenticate).
 * Limits applied here, before any JSON is parsed: request rate per source address (429), body size (413,
 * decided from Content-Length before reading when possible), header and body deadlines (408 / close).
 */
import type { ErrorBody } from "../contract/mod.ts";
import https from "node:https";
import net from "node:net";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { ApiError } from "./errors.ts";
import type { ApiResponse, DirectoryService } from "./directory.ts";
import { RateLimiter, rateLimitKey } from "./rate_limit.ts";
import { parseProxyV1, proxyLineEnd, ProxyProtocolError } from "./proxy_protocol.ts";
import {
  BODY_TIMEOUT_MS,
  ENROLL_BURST,
  ENROLL_COST,
  ENROLL_PER_HOUR,
  HEADERS_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  LINGER_MAX_BYTES,
  LINGER_MS,
  MAX_BODY_BYTES,
  MAX_CONNECTIONS,
  MAX_CONNECTIONS_PER_SOURCE,
  RATE_BURST,
  RATE_PER_SECOND,
} from "./limits.ts";

export interface HttpLimits {
  maxBodyBytes: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  idleTimeoutMs: number;
  ratePerSecond: number;
  rateBurst: number;
  /** Open TCP connections at once; more are closed on arrival. */
  maxConnections: number;
  /** Open TCP connections from one source (rateLimitKey) at once; more are closed on arrival. */
  maxConnectionsPerSource: number;
  /** Certificates issued (enrollments and renewals) per source: a separate, slower bucket. */
  enrollPerHour: number;
  enrollBurst: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxBodyBytes: MAX_BODY_BYTES,
  headersTimeoutMs: HEADERS_TIMEOUT_MS,
  bodyTimeoutMs: BODY_TIMEOUT_MS,
  idleTimeoutMs: IDLE_TIMEOUT_MS,
  ratePerSecond: RATE_PER_SECOND,
  rateBurst: RATE_BURST,
  maxConnections: MAX_CONNECTIONS,
  maxConnectionsPerSource: MAX_CONNECTIONS_PER_SOURCE,
  enrollPerHour: ENROLL_PER_HOUR,
  enrollBurst: ENROLL_BURST,
};

class BodyError extends Error {
  constructor(readonly apiError: ApiError) {
    super(apiError.message);
  }
}

/** Reads the body up to `max` bytes within `deadlineMs`; rejects with 413 / 408 as soon as either is hit. */
function readBody(req: IncomingMessage, max: number, deadlineMs: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    let done = false;
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      if (err) reject(err);
      else {
        const out = new Uint8Array(size);
        let o = 0;
        for (const c of chunks) {
          out.set(c, o);
          o += c.length;
        }
        resolve(out);
      }
    };
    const onData = (c: Uint8Array) => {
      size += c.length;
      if (size > max) {
        finish(new BodyError(new ApiError(413, "BODY_TOO_LARGE", `request body exceeds ${max} bytes`)));
        return;
      }
      chunks.push(c);
    };
    const onEnd = () => finish(null);
    const onError = (e: Error) => finish(e);
    const timer = setTimeout(
      () => finish(new BodyError(new ApiError(408, "TIMEOUT", "request body not received in time"))),
      deadlineMs,
    );
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
  });
}

function send(res: ServerResponse, r: ApiResponse, head: boolean, close: boolean): void {
  let body: Uint8Array;
  let type: string;
  if (r.bytes) {
    body = r.bytes;
    type = r.contentType ?? "application/octet-stream";
  } else if (r.text !== undefined) {
    body = new TextEncoder().encode(r.text);
    type = r.contentType ?? "text/plain; charset=utf-8";
  } else {
    body = new TextEncoder().encode(JSON.stringify(r.json ?? null));
    type = "application/json";
  }
  const headers: Record<string, string | number> = {
    "content-type": type,
    "content-length": body.length,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  };
  if (close) headers["connection"] = "close";
  res.writeHead(r.status, headers);
  res.end(head ? undefined : body);
}

/** Closes a connection after an error answer without resetting it. Closing a socket with unread bytes sends
 * a TCP reset, and the client's kernel then throws away the answer it had already received: a client that
 * writes its whole body before reading (no Expect: 100-continue) would see a reset, not the 413. So the rest
 * of the request is read and dropped, up to LINGER_MAX_BYTES or LINGER_MS, and only then is the socket
 * closed (past either bound it is reset anyway: the client is not sending a request any more). */
function lingerClose(sock: Socket, req: IncomingMessage): void {
  if (sock.destroyed) return;
  let dropped = 0;
  const timer = setTimeout(() => sock.destroy(), LINGER_MS);
  sock.once("close", () => clearTimeout(timer));
  const drop = (c: Uint8Array) => {
    dropped += c.length;
    if (dropped > LINGER_MAX_BYTES) sock.destroy();
  };
  req.on("data", drop);
  req.once("end", () => sock.end());
  req.resume();
}

/** A whole HTTP/1.1 error answer as bytes, for a socket the HTTP server has no request (and so no response
 * object) for. */
function rawResponse(e: ApiError): Uint8Array {
  const body = JSON.stringify({ error: { code: e.code, message: e.message } });
  const reason = e.status === 408 ? "Request Timeout" : "Error";
  return new TextEncoder().encode(
    `HTTP/1.1 ${e.status} ${reason}\r\ncontent-type: application/json\r\n` +
      `content-length: ${new TextEncoder().encode(body).length}\r\ncache-control: no-store\r\n` +
      `connection: close\r\n\r\n${body}`,
  );
}

function errorResponse(e: ApiError): ApiResponse {
  const body: ErrorBody = { error: { code: e.code, message: e.message } };
  return { status: e.status, json: body };
}

export interface HttpServerHandle {
  port: number;
  /** Serves another certificate (a renewal) on connections from now on; open ones carry on. */
  setCertificate(certPem: string, keyPem: string): void;
  close(): Promise<void>;
}

export async function startHttpServer(opts: {
  service: DirectoryService;
  certPem: string;
  keyPem: string;
  hostname: string;
  port: number;
  limits?: Partial<HttpLimits>;
  onError?: (e: unknown) => void;
  /** Every connection starts with a PROXY protocol v1 line from a trusted TCP load balancer, which names the
   * client (per-source limits then count clients, not the balancer). */
  proxyProtocol?: boolean;
}): Promise<HttpServerHandle> {
  const limits: HttpLimits = { ...DEFAULT_HTTP_LIMITS, ...opts.limits };
  const limiter = new RateLimiter(limits.ratePerSecond, limits.rateBurst);
  // Issuance buckets live in the store, shared by every node over one database.
  const issuance = { perSecond: limits.enrollPerHour / 3600, burst: limits.enrollBurst };
  const sockets = new Set<Socket>();
  /** Client addresses given by PROXY lines: by raw socket, and by the connection's own address and port (the
   * TLS socket a request arrives on shares them with its raw socket). */
  const proxiedByRaw = new WeakMap<Socket, string>();
  const proxiedByPeer = new Map<string, string>();
  /** Raw connections still sending their PROXY line (closed with the server). */
  const awaitingLine = new Set<Socket>();
  const peerKey = (s: Socket) => `${s.remoteAddress}|${s.remotePort}`;
  const sourceOf = (s: Socket) =>
    proxiedByRaw.get(s) ?? proxiedByPeer.get(peerKey(s)) ?? s.remoteAddress ?? "unknown";
  /** Deadline for the next request's headers on each connection (armed on connect and after each response). */
  const headerTimers = new Map<Socket, ReturnType<typeof setTimeout>>();

  /** Sockets answered 408 by the header deadline: a request completing after that gets no second answer. */
  const timedOut = new WeakSet<Socket>();
  /** `answer`: the deadline of a request the client owes us (408, as documented); an idle keep-alive
   * connection between requests is closed without one (the client may be sending a request right then,
   * and would take the 408 for its answer). */
  const armHeaderTimer = (sock: Socket, ms: number, answer = false) => {
    clearTimeout(headerTimers.get(sock));
    headerTimers.set(
      sock,
      setTimeout(() => {
        headerTimers.delete(sock);
        if (!answer || sock.destroyed) return sock.destroy();
        timedOut.add(sock);
        sock.write(rawResponse(new ApiError(408, "TIMEOUT", "request headers not received in time")));
        sock.end();
        // What the client still trickles is not read as a request; the socket goes once the answer is out.
        setTimeout(() => sock.destroy(), LINGER_MS);
      }, ms),
    );
  };
  const disarmHeaderTimer = (sock: Socket) => {
    clearTimeout(headerTimers.get(sock));
    headerTimers.delete(sock);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const sock = req.socket as TLSSocket;
    if (timedOut.has(sock)) {
      res.destroy();
      return;
    }
    disarmHeaderTimer(sock);
    let close = false;
    res.on("finish", () => {
      if (!sock.destroyed && !close) armHeaderTimer(sock, limits.idleTimeoutMs);
    });
    const head = req.method === "HEAD";
    try {
      const url = new URL(req.url ?? "/", "https://directory.invalid");
      const method = req.method ?? "GET";
      const remote = rateLimitKey(sourceOf(sock));
      const issues = method === "POST" && (url.pathname === "/v1/enroll" || url.pathname === "/v1/renew");
      const now = Date.now();
      let wait = limiter.take(remote, issues ? ENROLL_COST : 1, now);
      // A request refused by the first bucket does not draw on the second.
      if (wait === 0 && issues) {
        wait = await opts.service.store.takeBucket(`issue:${remote}`, 1, now, issuance);
      }
      if (wait > 0) {
        close = req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
        res.setHeader("retry-after", String(wait));
        throw new ApiError(429, "RATE_LIMITED", "too many requests from this address; slow down");
      }
      const hasBody = req.headers["content-length"] !== undefined ||
        req.headers["transfer-encoding"] !== undefined;
      let body: unknown = undefined;
      if (hasBody) {
        const declared = Number(req.headers["content-length"] ?? "0");
        if (!(declared >= 0) || declared > limits.maxBodyBytes) {
          // Refused before reading a byte of it; the connection is closed so the rest is never read either.
          close = true;
          throw new ApiError(413, "BODY_TOO_LARGE", `request body exceeds ${limits.maxBodyBytes} bytes`);
        }
        let raw: Uint8Array;
        try {
          raw = await readBody(req, limits.maxBodyBytes, limits.bodyTimeoutMs);
        } catch (e) {
          close = true;
          if (e instanceof BodyError) throw e.apiError;
          throw new ApiError(400, "BAD_REQUEST", "request body could not be read");
        }
        if (raw.length > 0) {
          const ctype = String(req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
          if (ctype !== "application/json") {
            throw new ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "request body must be application/json");
          }
          try {
            body = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw));
          } catch {
            throw new ApiError(400, "BAD_JSON", "request body is not valid UTF-8 JSON");
          }
        }
      }
      const peerCertDer = () => {
        const peer = sock.getPeerCertificate?.(true);
        return peer && peer.raw ? new Uint8Array(peer.raw) : null;
      };
      const r = await opts.service.handle({
        method,
        path: url.pathname,
        query: url.searchParams,
        body,
        peerCertDer,
        // Behind a load balancer: the address its PROXY line named, not the balancer's.
        remoteAddress: sourceOf(sock),
      });
      send(res, r, head, close);
    } catch (e) {
      if (e instanceof ApiError) {
        // No "Connection: close" header even when closing: with it the HTTP server destroys the socket as
        // soon as the answer is written, resetting it under a client still sending; lingerClose ends it.
        send(res, errorResponse(e), head, false);
      } else {
        opts.onError?.(e);
        send(res, errorResponse(new ApiError(500, "INTERNAL", "internal error")), head, true);
        close = true;
      }
    }
    if (close) res.on("finish", () => lingerClose(sock, req));
  };

  const server = https.createServer({
    cert: opts.certPem,
    key: opts.keyPem,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.2",
    // The header deadline starts only once TLS is up, and the idle timer is reset by every byte: without a
    // deadline of its own, a ClientHello trickled a byte at a time held a connection slot for ever.
    handshakeTimeout: limits.headersTimeoutMs,
  }, (req, res) => {
    handle(req, res).catch((e) => {
      opts.onError?.(e);
      try {
        res.destroy();
      } catch { /* already gone */ }
    });
  });
  server.on("secureConnection", (sock: TLSSocket) => {
    sockets.add(sock);
    armHeaderTimer(sock, limits.headersTimeoutMs, true);
    // Idle sockets (no bytes either way) are closed whatever state they are in.
    sock.setTimeout(limits.idleTimeoutMs, () => sock.destroy());
    sock.on("close", () => {
      sockets.delete(sock);
      disarmHeaderTimer(sock);
    });
  });
  // A TCP connection that never finishes its TLS handshake (or goes silent later) is closed when idle.
  let open = 0;
  const openBySource = new Map<string, number>();
  server.on("connection", (sock: Socket) => {
    const source = rateLimitKey(sourceOf(sock));
    const fromSource = openBySource.get(source) ?? 0;
    if (open >= limits.maxConnections || fromSource >= limits.maxConnectionsPerSource) {
      sock.destroy();
      return;
    }
    open++;
    openBySource.set(source, fromSource + 1);
    sock.once("close", () => {
      open--;
      const n = (openBySource.get(source) ?? 1) - 1;
      if (n <= 0) openBySource.delete(source);
      else openBySource.set(source, n);
    });
    sock.setTimeout(limits.idleTimeoutMs, () => sock.destroy());
  });
  server.on("tlsClientError", () => {/* a failed handshake is the client's problem, not ours */});
  server.on("clientError", (_e: Error, sock: Socket) => sock.destroy());

  // With the PROXY protocol, a plain TCP listener reads the line, then hands the socket to the HTTPS server.
  const front: net.Server = opts.proxyProtocol
    ? net.createServer((raw: Socket) => {
      let buffered = new Uint8Array(0);
      const deadline = setTimeout(() => raw.destroy(), limits.headersTimeoutMs);
      awaitingLine.add(raw);
      raw.once("close", () => {
        clearTimeout(deadline);
        awaitingLine.delete(raw);
      });
      raw.on("error", () => {/* the peer went away */});
      const onReadable = () => {
        let chunk: Uint8Array | null;
        while ((chunk = raw.read() as Uint8Array | null) !== null) {
          const joined = new Uint8Array(buffered.length + chunk.length);
          joined.set(buffered);
          joined.set(chunk, buffered.length);
          buffered = joined;
          let end: number;
          let client: { address: string } | null;
          try {
            end = proxyLineEnd(buffered);
            if (end < 0) continue;
            client = parseProxyV1(new TextDecoder().decode(buffered.subarray(0, end)));
          } catch (e) {
            if (!(e instanceof ProxyProtocolError)) opts.onError?.(e);
            clearTimeout(deadline);
            raw.destroy();
            return;
          }
          clearTimeout(deadline);
          awaitingLine.delete(raw);
          raw.off("readable", onReadable);
          const rest = buffered.subarray(end + 2);
          if (rest.length > 0) raw.unshift(rest);
          if (client) {
            proxiedByRaw.set(raw, client.address);
            const key = peerKey(raw);
            proxiedByPeer.set(key, client.address);
            raw.once("close", () => proxiedByPeer.delete(key));
          }
          server.emit("connection", raw);
          return;
        }
      };
      raw.on("readable", onReadable);
    })
    : server;
  await new Promise<void>((resolve, reject) => {
    front.once("error", reject);
    front.listen(opts.port, opts.hostname, () => {
      front.off("error", reject);
      resolve();
    });
  });
  const port = (front.address() as { port: number }).port;
  return {
    port,
    setCertificate: (certPem, keyPem) => server.setSecureContext({ cert: certPem, key: keyPem }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of headerTimers.values()) clearTimeout(t);
        headerTimers.clear();
        if (front !== server) {
          front.close();
          for (const s of awaitingLine) s.destroy();
        }
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
