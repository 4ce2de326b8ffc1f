/**
 * The UDP Roughtime server: a node:dgram socket that collects the requests arriving together and has the
 * Responder (responder.ts) sign them as one batch, plus the optional TCP listener (tcp.ts).
 */
import dgram from "node:dgram";
import { DEFAULT_PORT, MAX_BATCH_SIZE, MAX_PENDING_REQUESTS, MAX_REQUEST_SIZE } from "./constants.ts";
import { Responder, type ResponderOptions, type RoughtimeServerStats } from "./responder.ts";
import { listenTcp, type TcpListener } from "./tcp.ts";

export { Responder, type ResponderOptions, type RoughtimeServerStats, type Transport } from "./responder.ts";

export interface RoughtimeServerOptions extends ResponderOptions {
  /** Default "127.0.0.1". */
  hostname?: string;
  /** Default 2002; 0 = any free port. */
  port?: number;
  /** How long the first request of a batch waits for others. Default 0 (one event-loop turn). */
  batchWindowMs?: number;
  /** Also accept RFC 10049 framing over TCP on the same port number (IETF versions). Default false. */
  tcp?: boolean;
}

export interface RunningRoughtimeServer {
  hostname: string;
  port: number;
  publicKey: Uint8Array;
  close(): Promise<void>;
  /** Counters since start (the benchmark reads the batch sizes). */
  stats(): RoughtimeServerStats;
}

interface Pending {
  packet: Uint8Array;
  address: string;
  port: number;
}

/** Starts a UDP Roughtime server answering RFC 10049, drafts 12-19 and Google-Roughtime. */
export async function startRoughtimeServer(opts: RoughtimeServerOptions): Promise<RunningRoughtimeServer> {
  const responder = new Responder(opts);
  const hostname = opts.hostname ?? "127.0.0.1";
  const socket = dgram.createSocket(hostname.includes(":") ? "udp6" : "udp4");
  const windowMs = opts.batchWindowMs ?? 0;
  let pending: Pending[] = [];
  let timer: ReturnType<typeof setTimeout> | null = null;
  let closed = false;

  const flush = () => {
    timer = null;
    const batch = pending;
    pending = [];
    if (closed || batch.length === 0) return;
    let replies: (Uint8Array | null)[];
    try {
      replies = responder.respond(batch.map((p) => p.packet));
    } catch {
      // A bug must not take the server down; the batch is dropped.
      responder.stats.dropped += batch.length;
      return;
    }
    batch.forEach((p, i) => {
      const r = replies[i];
      if (r) socket.send(r, p.port, p.address, () => {});
    });
  };

  socket.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
    if (closed) return;
    if (pending.length >= MAX_PENDING_REQUESTS || msg.length > MAX_REQUEST_SIZE) {
      responder.stats.received++;
      responder.stats.dropped++;
      return;
    }
    pending.push({ packet: new Uint8Array(msg), address: rinfo.address, port: rinfo.port });
    if (pending.length >= MAX_BATCH_SIZE) {
      if (timer) clearTimeout(timer);
      flush();
    } else if (!timer) {
      timer = setTimeout(flush, windowMs);
    }
  });
  socket.on("error", () => {
    // Send errors (e.g. ICMP unreachable surfacing) concern one client only; keep serving.
  });

  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(opts.port ?? DEFAULT_PORT, hostname, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  const addr = socket.address();
  let tcp: TcpListener | null = null;
  if (opts.tcp) {
    try {
      tcp = await listenTcp(responder, hostname, addr.port);
    } catch (e) {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
      throw e;
    }
  }
  return {
    hostname,
    port: addr.port,
    publicKey: responder.keys[0].publicKey,
    stats: () => structuredClone(responder.stats),
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      if (timer) clearTimeout(timer);
      timer = null;
      pending = [];
      return Promise.all([
        new Promise<void>((resolve) => socket.close(() => resolve())),
        tcp?.close(),
      ]).then(() => {});
    },
  };
}
