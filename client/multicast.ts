/**
 * A UDP socket that hears a multicast group on a port, as the home router's announcements need (PCP's and
 * NAT-PMP's on 5350, client/pcp.ts; UPnP's NOTIFYs on 1900, client/ssdp_watch.ts).
 */
import dgram from "node:dgram";

export interface GroupListenOptions {
  v6: boolean;
  group: string;
  port: number;
  /** What is heard there, for the log ("the router's announcements"). */
  what: string;
  /** The interfaces to join the group on (addMembership's second argument: an IPv4 address, "::%name");
   * when none is given, or none of them works, the system's default. */
  joinVia?: readonly string[];
  /** Every host is in this group (the all-nodes groups): it is joined for the systems that want it said, and a
   * join that fails is no news. */
  everyHostIn?: boolean;
  onMessage(msg: Uint8Array, from: dgram.RemoteInfo): void;
  log?: (text: string) => void;
}

/** Binds `port` shared with other programs that listen there too (SO_REUSEADDR: each gets its copy of what is
 * multicast) and joins the group. Over IPv4 the socket is bound to the group's address itself, so it gets what
 * is multicast there and nothing sent to our own address on that port (which another program may be waiting
 * for); over IPv6 to "::", since a link-scope group cannot be bound without its interface. Null, said in the
 * log, when the port cannot be had. */
export async function listenGroup(o: GroupListenOptions): Promise<dgram.Socket | null> {
  const s = dgram.createSocket({ type: o.v6 ? "udp6" : "udp4", reuseAddr: true, ipv6Only: o.v6 });
  try {
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.bind(o.port, o.v6 ? "::" : o.group, () => {
        s.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    o.log?.(
      `not listening for ${o.what} on ${o.v6 ? "IPv6" : "IPv4"} port ${o.port}: ${(e as Error).message}`,
    );
    try {
      s.close();
    } catch { /* never opened */ }
    return null;
  }
  s.on("error", () => {});
  let joined = 0;
  for (const via of o.joinVia ?? []) {
    try {
      s.addMembership(o.group, via);
      joined++;
    } catch { /* an interface without multicast */ }
  }
  if (joined === 0) {
    try {
      s.addMembership(o.group);
    } catch {
      if (!o.everyHostIn) o.log?.(`cannot join ${o.group}: ${o.what} may not be heard`);
    }
  }
  s.on("message", o.onMessage);
  return s;
}
