/**
 * The relay: for users who cannot reach each other directly (NAT on both sides, firewalls, relay-only
 * privacy mode). Each online client holds one control connection here (mutual TLS with its certificate,
 * judged by `authenticate`: the CA, its validity, the CRL, still the user's current certificate). A dialer
 * asks for a circuit to a user over its control connection; the relay hands both ends a one-time token, each
 * end opens a plain TCP leg with it, and the relay splices the two legs. The peers' own mutual TLS 1.3
 * session runs end to end inside the circuit (contract/relay.ts), so what passes here is ciphertext.
 *
 * Limits per user (circuits open at once, bytes and duration per circuit) end with a clear `error` or
 * `closed` notice on the control connection. A leg that does not find its partner in time is closed.
 */
import net from "node:net";
import tls from "node:tls";
import crypto from "node:crypto";
import {
  CIRCUIT_LINE_BYTES,
  CIRCUIT_READY,
  decodeRelayRequest,
  MAX_CONTROL_LINE_BYTES,
  parseCircuitLine,
  type RelayNotice,
} from "../contract/mod.ts";

export interface RelayLimits {
  /** Circuits one user may have open or pending at once (as either end). */
  maxCircuitsPerUser: number;
  /** Bytes one circuit may carry (both directions together). */
  maxCircuitBytes: number;
  /** How long one circuit may stay open. */
  maxCircuitMs: number;
  /** How long a token waits for both legs. */
  joinTimeoutMs: number;
  /** A control connection that sends nothing (not even a ping) for this long is closed. */
  controlIdleMs: number;
  /** Bound on the TLS handshake of a control connection and on a leg's first line. */
  handshakeTimeoutMs: number;
  /** Control connections at once (all users). */
  maxControls: number;
  /** Reversal requests one user may make per minute. */
  maxReversalsPerMinute: number;
}

export const DEFAULT_RELAY_LIMITS: RelayLimits = {
  maxCircuitsPerUser: 16,
  maxCircuitBytes: 256 * 1024 * 1024,
  maxCircuitMs: 6 * 3600_000,
  joinTimeoutMs: 10_000,
  controlIdleMs: 90_000,
  handshakeTimeoutMs: 10_000,
  maxControls: 10_000,
  maxReversalsPerMinute: 30,
};

export interface RelayOptions {
  certPem: string;
  keyPem: string;
  caPem: string;
  /** The user a client certificate currently belongs to; throws to refuse (revoked, expired, unknown...). */
  authenticate(certDer: Uint8Array): Promise<{ name: string }>;
  hostname: string;
  port: number;
  limits?: Partial<RelayLimits>;
  /** Called with every chunk the relay forwards (the test of "the relay sees only ciphertext" records them). */
  onForward?: (chunk: Uint8Array) => void;
}

interface Control {
  name: string;
  socket: tls.TLSSocket;
  send(n: RelayNotice): void;
}

interface Circuit {
  token: string;
  from: string;
  to: string;
  legs: { D: net.Socket | null; L: net.Socket | null };
  /** Bytes a leg sent before its partner joined (held, bounded, then written once spliced). */
  early: { D: Uint8Array[]; L: Uint8Array[] };
  bytes: number;
  timer: ReturnType<typeof setTimeout> | null;
  spliced: boolean;
  ended: boolean;
}

export interface RelayStats {
  controls: number;
  circuits: number;
  circuitsOpened: number;
  bytesForwarded: number;
  refused: Record<string, number>;
}

export interface RunningRelay {
  port: number;
  hostname: string;
  /** Whether `name` holds a control connection now (the phonebook lists such users online at once). */
  isConnected(name: string): boolean;
  /** The phonebook renewed its certificate: new control connections get the new one. */
  setCertificate(certPem: string, keyPem: string): void;
  stats(): RelayStats;
  close(): Promise<void>;
}

/** Bytes a leg may send before its partner joined (a TLS ClientHello fits many times). */
const MAX_EARLY_BYTES = 64 * 1024;

export async function startRelay(opts: RelayOptions): Promise<RunningRelay> {
  const limits: RelayLimits = { ...DEFAULT_RELAY_LIMITS, ...opts.limits };
  const controls = new Map<string, Control>();
  const circuits = new Map<string, Circuit>();
  const perUser = new Map<string, number>();
  /** Recent reversal requests per user (times, ms), for the per-minute limit. */
  const reversals = new Map<string, number[]>();
  const raw = new Set<net.Socket>();
  const stats: RelayStats = { controls: 0, circuits: 0, circuitsOpened: 0, bytesForwarded: 0, refused: {} };
  const refuse = (code: string) => stats.refused[code] = (stats.refused[code] ?? 0) + 1;
  let closing = false;

  const count = (name: string, d: number) => {
    const n = (perUser.get(name) ?? 0) + d;
    if (n <= 0) perUser.delete(name);
    else perUser.set(name, n);
  };

  const endCircuit = (c: Circuit, code: string | null, message: string) => {
    if (c.ended) return;
    c.ended = true;
    circuits.delete(c.token);
    if (c.timer) clearTimeout(c.timer);
    count(c.from, -1);
    count(c.to, -1);
    stats.circuits = circuits.size;
    c.legs.D?.destroy();
    c.legs.L?.destroy();
    if (code) {
      refuse(code);
      for (const who of [c.from, c.to]) {
        controls.get(who)?.send({ t: "closed", token: c.token, code, message });
      }
    }
  };

  const splice = (c: Circuit) => {
    const d = c.legs.D!;
    const l = c.legs.L!;
    c.spliced = true;
    if (c.timer) clearTimeout(c.timer);
    c.timer = setTimeout(
      () => endCircuit(c, "LIMIT_DURATION", `a relayed circuit may last ${limits.maxCircuitMs / 1000} s`),
      limits.maxCircuitMs,
    );
    const pipe = (from: net.Socket, to: net.Socket) => {
      from.on("data", (chunk: Uint8Array) => {
        c.bytes += chunk.length;
        stats.bytesForwarded += chunk.length;
        if (c.bytes > limits.maxCircuitBytes) {
          endCircuit(c, "LIMIT_BYTES", `a relayed circuit may carry ${limits.maxCircuitBytes} bytes`);
          return;
        }
        opts.onForward?.(chunk);
        // Backpressure: a slow reader on one side slows the writer on the other, the relay holds little.
        if (!to.write(chunk)) {
          from.pause();
          to.once("drain", () => from.resume());
        }
      });
      from.on("close", () => endCircuit(c, null, ""));
    };
    // The holders of early bytes step aside: from here every byte is piped.
    d.removeAllListeners("data");
    l.removeAllListeners("data");
    d.write(new Uint8Array([CIRCUIT_READY]));
    l.write(new Uint8Array([CIRCUIT_READY]));
    for (const chunk of c.early.D) l.write(chunk);
    for (const chunk of c.early.L) d.write(chunk);
    c.early = { D: [], L: [] };
    pipe(d, l);
    pipe(l, d);
    d.resume();
    l.resume();
  };

  const onLeg = (sock: net.Socket, first: Uint8Array) => {
    // Collect the fixed-length first line, keep what follows it.
    let buf = first;
    const timer = setTimeout(() => sock.destroy(), limits.handshakeTimeoutMs);
    const take = (chunk: Uint8Array) => {
      const b = new Uint8Array(buf.length + chunk.length);
      b.set(buf);
      b.set(chunk, buf.length);
      buf = b;
      check();
    };
    const check = () => {
      if (buf.length < CIRCUIT_LINE_BYTES) return;
      sock.off("data", take);
      sock.pause();
      clearTimeout(timer);
      const parsed = parseCircuitLine(new TextDecoder().decode(buf.subarray(0, CIRCUIT_LINE_BYTES)));
      const c = parsed ? circuits.get(parsed.token) : undefined;
      if (!parsed || !c || c.legs[parsed.role] !== null || c.ended) {
        refuse("NO_SUCH_CIRCUIT");
        sock.destroy();
        return;
      }
      c.legs[parsed.role] = sock;
      const rest = buf.subarray(CIRCUIT_LINE_BYTES);
      if (rest.length > 0) c.early[parsed.role].push(rest);
      sock.once("close", () => endCircuit(c, null, ""));
      if (c.legs.D && c.legs.L) {
        splice(c);
        return;
      }
      // Until the partner joins, hold a little of what this leg sends (its TLS ClientHello).
      let early = rest.length;
      const hold = (chunk: Uint8Array) => {
        if (c.spliced) return;
        early += chunk.length;
        if (early > MAX_EARLY_BYTES) return endCircuit(c, "BAD_REQUEST", "too much data before the circuit");
        c.early[parsed.role].push(chunk);
      };
      sock.on("data", hold);
      sock.resume();
    };
    sock.on("data", take);
    check();
  };

  const tlsServer = tls.createServer({
    cert: opts.certPem,
    key: opts.keyPem,
    ca: opts.caPem,
    requestCert: true,
    // Judged by `authenticate` on the directory's own rules (current certificate, CRL), not by the TLS
    // stack (which would reject everyone on a stale CRL and knows nothing of superseded certificates).
    rejectUnauthorized: false,
    minVersion: "TLSv1.3",
  }, (socket) => void onControl(socket));
  tlsServer.on("tlsClientError", (_e, s) => s.destroy());
  tlsServer.on("error", () => {});

  const onControl = async (socket: tls.TLSSocket) => {
    socket.on("error", () => {});
    const cert = socket.getPeerCertificate(true) as { raw?: Uint8Array } | null;
    const sendRaw = (n: RelayNotice) => {
      if (!socket.destroyed) socket.write(JSON.stringify(n) + "\n");
    };
    let name: string;
    try {
      if (!cert?.raw || cert.raw.length === 0) throw new Error("no certificate");
      name = (await opts.authenticate(new Uint8Array(cert.raw))).name;
    } catch {
      refuse("UNAUTHENTICATED");
      sendRaw({ t: "error", code: "UNAUTHENTICATED", message: "a current client certificate is required" });
      socket.end();
      return;
    }
    if (controls.size >= limits.maxControls) {
      refuse("BUSY");
      sendRaw({ t: "error", code: "BUSY", message: "the relay holds as many users as it can" });
      socket.end();
      return;
    }
    const me: Control = { name, socket, send: sendRaw };
    // One control connection per user: a new one (a restart) replaces the old.
    controls.get(name)?.socket.destroy();
    controls.set(name, me);
    stats.controls = controls.size;
    sendRaw({ t: "ready", name });
    socket.setTimeout(limits.controlIdleMs, () => socket.destroy());
    socket.once("close", () => {
      if (controls.get(name) === me) controls.delete(name);
      stats.controls = controls.size;
    });
    let pending = "";
    socket.on("data", (chunk: Uint8Array) => {
      pending += new TextDecoder().decode(chunk);
      if (pending.length > MAX_CONTROL_LINE_BYTES && !pending.includes("\n")) {
        socket.destroy();
        return;
      }
      let i;
      while ((i = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        onRequest(me, line);
      }
    });
  };

  const onRequest = (me: Control, line: string) => {
    let req;
    try {
      req = decodeRelayRequest(JSON.parse(line));
    } catch {
      me.send({ t: "error", code: "BAD_REQUEST", message: "not a relay request" });
      return;
    }
    if (req.t === "ping") return me.send({ t: "pong" });
    const fail = (code: string, message: string) => {
      refuse(code);
      me.send({ t: "error", ...("id" in req ? { id: req.id } : {}), code, message });
    };
    if (req.to === me.name) return fail("SELF", "a circuit to yourself");
    const peer = controls.get(req.to);
    if (!peer) return fail("OFFLINE", `${req.to} is not connected to this relay`);
    if (req.t === "punch-reply") {
      // The callee answers a punch: passed to the dialer as is (a port number; the dialer checks it asked).
      peer.send({ t: "punch-reply", from: me.name, port: req.port });
      return;
    }
    if (req.t === "reverse" || req.t === "punch") {
      const now = Date.now();
      const recent = (reversals.get(me.name) ?? []).filter((t) => now - t < 60_000);
      if (recent.length >= limits.maxReversalsPerMinute) {
        return fail("LIMIT_REVERSALS", `at most ${limits.maxReversalsPerMinute} dial-back requests a minute`);
      }
      recent.push(now);
      reversals.set(me.name, recent);
      if (req.t === "punch") {
        peer.send({ t: "punch", from: me.name, port: req.port });
        me.send({ t: "punching", id: req.id });
        return;
      }
      // Only the name goes on: the callee dials what the phonebook lists for it, nothing the relay says.
      peer.send({ t: "dial-back", from: me.name });
      me.send({ t: "reversing", id: req.id });
      return;
    }
    for (const who of [me.name, req.to]) {
      if ((perUser.get(who) ?? 0) >= limits.maxCircuitsPerUser) {
        return fail(
          "LIMIT_CIRCUITS",
          `${who} already has ${limits.maxCircuitsPerUser} relayed circuits (the relay's limit per user)`,
        );
      }
    }
    const token = crypto.randomBytes(16).toString("hex");
    const c: Circuit = {
      token,
      from: me.name,
      to: req.to,
      legs: { D: null, L: null },
      early: { D: [], L: [] },
      bytes: 0,
      timer: null,
      spliced: false,
      ended: false,
    };
    c.timer = setTimeout(() => {
      if (!c.spliced) endCircuit(c, "JOIN_TIMEOUT", "the other end did not join the circuit in time");
    }, limits.joinTimeoutMs);
    circuits.set(token, c);
    count(me.name, 1);
    count(req.to, 1);
    stats.circuits = circuits.size;
    stats.circuitsOpened++;
    peer.send({ t: "incoming", token, from: me.name });
    me.send({ t: "circuit", id: req.id, token });
  };

  const server = net.createServer((sock) => {
    raw.add(sock);
    sock.on("error", () => {});
    // What one leg writes goes out to the other at once: a circuit carries a session's small frames, which
    // Nagle's algorithm would hold until the delayed ACK of the previous one.
    sock.setNoDelay(true);
    sock.once("close", () => raw.delete(sock));
    if (closing) return void sock.destroy();
    const timer = setTimeout(() => sock.destroy(), limits.handshakeTimeoutMs);
    sock.once("data", (first: Uint8Array) => {
      clearTimeout(timer);
      sock.pause();
      if (first[0] === 0x16) {
        // TLS: a control connection. The first bytes go back to be read by the TLS layer.
        sock.unshift(first);
        tlsServer.emit("connection", sock);
      } else onLeg(sock, first);
    });
  });
  server.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address() as net.AddressInfo;
  return {
    port: bound.port,
    hostname: opts.hostname,
    isConnected: (name) => controls.has(name),
    setCertificate: (certPem, keyPem) =>
      tlsServer.setSecureContext({ cert: certPem, key: keyPem, ca: opts.caPem }),
    stats: () => ({ ...stats, refused: { ...stats.refused } }),
    close: async () => {
      closing = true;
      for (const c of [...circuits.values()]) endCircuit(c, null, "");
      for (const s of raw) s.destroy();
      for (const c of controls.values()) c.socket.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
