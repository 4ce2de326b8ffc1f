/**
 * The datagram socket under the Roughtime server, behind one small interface so the batching loop
 * (server.ts) does not care which runtime API moves the bytes. `Deno.listenDatagram` (needs the "net"
 * unstable flag, set in deno.json) is the default: on this runtime an echo built on it costs a third to a
 * half of the CPU per datagram of one on node:dgram, which is a layer over the same Deno ops. node:dgram
 * remains for a program run without the flag.
 */
import dgram from "node:dgram";
import { MAX_REQUEST_SIZE } from "./constants.ts";

/** Which API a server uses: "deno" when available, else "node". */
export type UdpApi = "deno" | "node";

/** Where a datagram came from, opaque to the batching loop: it only hands it back to `send`. */
export type UdpPeer = unknown;

export interface UdpEndpoint {
  port: number;
  /** Queues a datagram to `to`; send failures concern that one client and are ignored. */
  send(data: Uint8Array, to: UdpPeer): void;
  close(): Promise<void>;
}

/** Called with each datagram as received; a datagram longer than MAX_REQUEST_SIZE arrives as
 * MAX_REQUEST_SIZE + 1 bytes (truncated), so the caller can drop it by its length alone. */
export type OnDatagram = (packet: Uint8Array, from: UdpPeer) => void;

export function defaultUdpApi(): UdpApi {
  return typeof Deno.listenDatagram === "function" ? "deno" : "node";
}

export function bindUdp(
  api: UdpApi,
  hostname: string,
  port: number,
  onDatagram: OnDatagram,
): Promise<UdpEndpoint> {
  return api === "deno"
    ? Promise.resolve(bindDeno(hostname, port, onDatagram))
    : bindNode(hostname, port, onDatagram);
}

const SLAB_DATAGRAMS = 64;

function bindDeno(hostname: string, port: number, onDatagram: OnDatagram): UdpEndpoint {
  const conn = Deno.listenDatagram({ transport: "udp", hostname, port });
  let closed = false;
  // One send in flight at a time, in order: awaiting each send measured faster here than many concurrent
  // ones, and it bounds what a burst of replies holds.
  // The queue is two parallel arrays (no object per reply).
  const queueData: Uint8Array[] = [];
  const queueTo: Deno.Addr[] = [];
  let head = 0;
  let sending = false;
  const pump = async () => {
    sending = true;
    while (head < queueData.length && !closed) {
      const i = head++;
      try {
        await conn.send(queueData[i], queueTo[i]);
      } catch {
        // Unreachable client, full buffer: that reply is lost, like any datagram.
      }
    }
    queueData.length = queueTo.length = 0;
    head = 0;
    sending = false;
  };
  // Datagrams are read into slices of a larger slab, one allocation per SLAB_DATAGRAMS datagrams: a batch
  // keeps views of its requests until it is answered, and the slab is freed once no view is left.
  const stride = MAX_REQUEST_SIZE + 1;
  let slab = new Uint8Array(0);
  let used = 0;
  const loop = (async () => {
    while (!closed) {
      if (slab.length - used < stride) {
        slab = new Uint8Array(stride * SLAB_DATAGRAMS);
        used = 0;
      }
      let got: [Uint8Array, Deno.Addr];
      try {
        got = await conn.receive(slab.subarray(used, used + stride));
        used += (got[0].length + 7) & ~7;
      } catch {
        if (closed) break;
        // A transient error (an ICMP report surfacing on the socket): yield, then keep serving.
        await new Promise((r) => setTimeout(r, 0));
        continue;
      }
      if (!closed) onDatagram(got[0], got[1]);
    }
  })();
  return {
    port: (conn.addr as Deno.NetAddr).port,
    send(data: Uint8Array, to: UdpPeer) {
      if (closed) return;
      queueData.push(data);
      queueTo.push(to as Deno.Addr);
      if (!sending) void pump();
    },
    close: async () => {
      if (closed) return;
      closed = true;
      conn.close();
      await loop;
    },
  };
}

async function bindNode(hostname: string, port: number, onDatagram: OnDatagram): Promise<UdpEndpoint> {
  const socket = dgram.createSocket(hostname.includes(":") ? "udp6" : "udp4");
  let closed = false;
  socket.on("message", (msg: Uint8Array, rinfo: dgram.RemoteInfo) => {
    if (closed) return;
    // node:dgram delivers whole datagrams; cap the copy so an oversized one is seen (and dropped) as such.
    onDatagram(new Uint8Array(msg.subarray(0, MAX_REQUEST_SIZE + 1)), rinfo);
  });
  socket.on("error", () => {
    // Send errors (e.g. ICMP unreachable surfacing) concern one client only; keep serving.
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, hostname, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  return {
    port: socket.address().port,
    send(data: Uint8Array, to: UdpPeer) {
      if (closed) return;
      const r = to as dgram.RemoteInfo;
      socket.send(data, r.port, r.address, () => {});
    },
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      return new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}
