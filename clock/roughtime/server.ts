/**
 * The UDP Roughtime server: a datagram socket (udp.ts) whose loop collects the requests arriving together
 * and has the Responder (responder.ts) sign them as one batch, plus the optional TCP listener (tcp.ts).
 */
import { clearImmediate, setImmediate } from "node:timers";
import { codeOf } from "../../coded_error.ts";
import { DEFAULT_PORT, MAX_BATCH_SIZE, MAX_PENDING_REQUESTS, MAX_REQUEST_SIZE } from "./constants.ts";
import { Responder, type ResponderOptions, type RoughtimeServerStats } from "./responder.ts";
import { listenTcp, type TcpListener } from "./tcp.ts";
import { bindUdp, defaultUdpApi, type UdpApi, type UdpEndpoint, type UdpPeer } from "./udp.ts";

export { Responder, type ResponderOptions, type RoughtimeServerStats, type Transport } from "./responder.ts";

/** Fresh UDP ports tried for `port: 0` with `tcp` when the TCP port of that number is taken. */
const TCP_PORT_ATTEMPTS = 8;

export interface RoughtimeServerOptions extends ResponderOptions {
  /** Default "127.0.0.1". */
  hostname?: string;
  /** Default 2002; 0 = any free port. */
  port?: number;
  /** How long the first request of a batch waits for others. Default 0: only until the datagrams already
   * queued on the socket have been read. */
  batchWindowMs?: number;
  /** Also accept RFC 10049 framing over TCP on the same port number (IETF versions). Default false. */
  tcp?: boolean;
  /** The datagram API: Deno.listenDatagram when the runtime offers it (faster), else node:dgram. */
  udpApi?: UdpApi;
}

export interface RunningRoughtimeServer {
  hostname: string;
  port: number;
  publicKey: Uint8Array;
  close(): Promise<void>;
  /** Counters since start (the benchmark reads the batch sizes). */
  stats(): RoughtimeServerStats;
}

/** Starts a UDP Roughtime server answering RFC 10049, drafts 12-19 and Google-Roughtime. */
export async function startRoughtimeServer(opts: RoughtimeServerOptions): Promise<RunningRoughtimeServer> {
  const responder = new Responder(opts);
  const hostname = opts.hostname ?? "127.0.0.1";
  const windowMs = opts.batchWindowMs ?? 0;
  // The batch being collected: request i is packets[i], from froms[i]. Both arrays are reused: respond()
  // keeps no reference to them, and the replies are queued on the socket before they are cleared.
  const packets: Uint8Array[] = [];
  const froms: UdpPeer[] = [];
  let timer: ReturnType<typeof setTimeout> | null = null;
  let immediate: ReturnType<typeof setImmediate> | null = null;
  let closed = false;
  let socket: UdpEndpoint | null = null;

  // Requests that arrive together are answered together: the first one of a burst arms a flush, either
  // after `windowMs` or (0, the default) by setImmediate, which runs once every datagram already queued
  // on the socket has been read; a full batch goes at once. Under load the socket fills while a batch is
  // signed, so batches grow with the load; a lone request is not delayed.
  const flush = () => {
    if (timer) clearTimeout(timer);
    if (immediate) clearImmediate(immediate);
    timer = null;
    immediate = null;
    const n = packets.length;
    if (closed || n === 0 || !socket) {
      packets.length = froms.length = 0;
      return;
    }
    let replies: (Uint8Array | null)[] | null = null;
    try {
      replies = responder.respond(packets);
    } catch {
      // A bug must not take the server down; the batch is dropped.
      responder.stats.dropped += n;
    }
    if (replies) {
      for (let i = 0; i < n; i++) {
        const r = replies[i];
        if (r) socket.send(r, froms[i]);
      }
    }
    packets.length = froms.length = 0;
  };

  const onDatagram = (packet: Uint8Array, from: UdpPeer) => {
    if (closed) return;
    if (packets.length >= MAX_PENDING_REQUESTS || packet.length > MAX_REQUEST_SIZE) {
      responder.stats.received++;
      responder.stats.dropped++;
      return;
    }
    packets.push(packet);
    froms.push(from);
    if (packets.length >= MAX_BATCH_SIZE) flush();
    else if (!timer && !immediate) {
      if (windowMs > 0) timer = setTimeout(flush, windowMs);
      else immediate = setImmediate(flush);
    }
  };

  const api = opts.udpApi ?? defaultUdpApi();
  const wanted = opts.port ?? DEFAULT_PORT;
  let tcp: TcpListener | null = null;
  // With port 0 the system picks a free UDP port, and TCP then needs the same number, which another program
  // may hold: a few fresh picks before giving up (a fixed port fails at once).
  for (let attempt = 1;; attempt++) {
    socket = await bindUdp(api, hostname, wanted, onDatagram);
    if (!opts.tcp) break;
    try {
      tcp = await listenTcp(responder, hostname, socket.port);
      break;
    } catch (e) {
      await socket.close();
      socket = null;
      if (wanted !== 0 || attempt >= TCP_PORT_ATTEMPTS || codeOf(e) !== "EADDRINUSE") throw e;
    }
  }
  const udp = socket;
  return {
    hostname,
    port: udp.port,
    publicKey: responder.keys[0].publicKey,
    stats: () => structuredClone(responder.stats),
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      if (timer) clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
      timer = null;
      immediate = null;
      packets.length = froms.length = 0;
      return Promise.all([udp.close(), tcp?.close()]).then(() => {});
    },
  };
}
