/**
 * Roughtime over TCP (RFC 10049 section 5): a stream of IETF packets ("ROUGHTIM", uint32 length, message),
 * several per connection, answered in order. Google-Roughtime has no framing and is UDP only. The 1,024-byte
 * minimum and the reply-size rule are UDP rules and do not apply here (see Responder.accept); every
 * connection has bounds instead: one packet at most MAX_REQUEST_SIZE, an idle timeout, a cap on connections.
 */
import net from "node:net";
import {
  MAX_REQUEST_SIZE,
  PACKET_HEADER_SIZE,
  PACKET_MAGIC,
  TCP_IDLE_TIMEOUT_MS,
  TCP_MAX_CONNECTIONS,
} from "./constants.ts";
import { RoughtimeError } from "./errors.ts";
import type { Responder } from "./responder.ts";
import { concat } from "./wire.ts";

/** Splits complete packets off the front of `buf`. Returns null when the stream is not Roughtime framing
 * (wrong magic or an oversized length): the connection must then be closed. */
export function takePackets(buf: Uint8Array): { packets: Uint8Array[]; rest: Uint8Array } | null {
  const packets: Uint8Array[] = [];
  let off = 0;
  while (buf.length - off >= PACKET_HEADER_SIZE) {
    for (let i = 0; i < PACKET_MAGIC.length; i++) if (buf[off + i] !== PACKET_MAGIC[i]) return null;
    const len = new DataView(buf.buffer, buf.byteOffset + off + 8, 4).getUint32(0, true);
    if (PACKET_HEADER_SIZE + len > MAX_REQUEST_SIZE) return null;
    if (buf.length - off < PACKET_HEADER_SIZE + len) break;
    packets.push(buf.slice(off, off + PACKET_HEADER_SIZE + len));
    off += PACKET_HEADER_SIZE + len;
  }
  return { packets, rest: buf.slice(off) };
}

export interface TcpListener {
  port: number;
  close(): Promise<void>;
}

export async function listenTcp(responder: Responder, hostname: string, port: number): Promise<TcpListener> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    if (sockets.size >= TCP_MAX_CONNECTIONS) {
      sock.destroy();
      return;
    }
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => sock.destroy());
    sock.setTimeout(TCP_IDLE_TIMEOUT_MS, () => sock.destroy());
    let buf: Uint8Array = new Uint8Array(0);
    sock.on("data", (chunk: Uint8Array) => {
      const split = takePackets(concat(buf, new Uint8Array(chunk)));
      if (!split) {
        sock.destroy();
        return;
      }
      buf = split.rest;
      if (split.packets.length === 0) return;
      let replies: (Uint8Array | null)[];
      try {
        replies = responder.respond(split.packets, "tcp");
      } catch {
        sock.destroy();
        return;
      }
      for (const r of replies) if (r) sock.write(r);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address();
  return {
    port: typeof addr === "object" && addr ? addr.port : port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Sends one request packet over a fresh TCP connection and returns the first reply packet. Throws
 * RoughtimeError TIMEOUT / UNREACHABLE / BAD_HEADER. */
export function exchangeTcp(
  host: string,
  port: number,
  request: Uint8Array,
  timeoutMs: number,
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    let buf: Uint8Array = new Uint8Array(0);
    let settled = false;
    const finish = (err: RoughtimeError | null, reply?: Uint8Array) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(reply as Uint8Array);
    };
    const timer = setTimeout(
      () => finish(new RoughtimeError("TIMEOUT", `no reply over TCP from ${host}:${port}`)),
      Math.max(0, timeoutMs),
    );
    sock.on("connect", () => sock.write(request));
    sock.on(
      "error",
      (e: Error) => finish(new RoughtimeError("UNREACHABLE", `TCP ${host}:${port}: ${e.message}`)),
    );
    sock.on(
      "close",
      () => finish(new RoughtimeError("UNREACHABLE", `TCP ${host}:${port} closed without a reply`)),
    );
    sock.on("data", (chunk: Uint8Array) => {
      buf = concat(buf, new Uint8Array(chunk));
      // Replies are smaller than requests; anything longer than that is not a reply for us.
      const split = takePackets(buf);
      if (!split) return finish(new RoughtimeError("BAD_HEADER", "TCP reply is not Roughtime framing"));
      if (split.packets.length) finish(null, split.packets[0]);
    });
  });
}
