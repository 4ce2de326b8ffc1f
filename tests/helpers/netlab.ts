/**
 * A small internet in Linux network namespaces, for tests of what crosses real networks and NATs: a public
 * segment (a bridge, addresses from 198.18.0.0/24, the benchmarking range of RFC 2544 that is never routed),
 * home routers doing NAT with nftables (cone or symmetric), hosts behind them (192.168.N.0/24), carrier NAT
 * (100.64.N.0/24 between two routers, RFC 6598), and host firewalls that drop everything inbound. With `ipv6`, every
 * machine also gets a global IPv6 address from the documentation prefix 2001:db8::/32 (the public segment
 * 2001:db8:ff::/64, a home LAN 2001:db8:N::/64) and no NAT: each home router is then the stateful firewall of
 * a typical IPv6 home, forwarding what its LAN started and silently dropping any other inbound. Each "machine" is a namespace; a test runs
 * our real program in it with `lab.command(host, ...)`. Everything is created under a unique prefix and removed
 * by `close()`; traffic never leaves the namespaces the lab made.
 *
 * Needs root, `ip` (iproute2) and `nft` (nftables). `labAvailable()` says whether this machine can build one.
 */
import { haveTool } from "./tools.ts";

export type NatKind =
  /** Linux masquerade: one public port per internal socket as long as it is free (endpoint-independent
   * mapping), inbound only for established flows (port-restricted cone). */
  | "cone"
  /** masquerade random,fully-random: a new random public port for every destination (symmetric NAT). */
  | "symmetric";

export interface RouterSpec {
  name: string;
  nat: NatKind;
  /** A router behind another router's LAN (carrier NAT); its WAN is then on that router's LAN. */
  behind?: string;
  /** Drop unsolicited inbound TCP on the WAN silently, as RFC 5382 REQ-4 asks of a NAT (for 6 s at least),
   * instead of Linux's immediate reset: what lets TCP simultaneous open (hole punching) through. */
  silentDrop?: boolean;
}

export interface HostSpec {
  name: string;
  /** The router whose LAN it is on; absent for a host on the public segment. */
  router?: string;
  /** A stateful firewall on the host: every new inbound connection or datagram is dropped. */
  firewall?: boolean;
}

export interface LabSpec {
  routers?: RouterSpec[];
  hosts: HostSpec[];
  /** Global IPv6 everywhere as well (not with a router behind another). */
  ipv6?: boolean;
}

export interface LabHost {
  name: string;
  /** The namespace to run in (`ip netns exec NS ...`). */
  ns: string;
  /** Its own address (public, or private behind its router). */
  address: string;
  /** Its global IPv6 address (a lab built with `ipv6`), else null. */
  address6: string | null;
  router: string | null;
}

export interface Lab {
  readonly hosts: Map<string, LabHost>;
  /** WAN address of each router (what peers on the public side see for hosts behind it). */
  readonly routerWan: Map<string, string>;
  host(name: string): LabHost;
  /** The namespace of a host or a router. */
  nsOf(name: string): string;
  /** The LAN address of a router (its hosts' gateway). */
  routerLan: Map<string, string>;
  /** The LAN IPv6 address of a router (an ipv6 lab): its hosts' IPv6 gateway, the first of their /64. */
  routerLan6: Map<string, string>;
  /** A command that runs `cmd` inside the host's (or router's) namespace. */
  command(host: string, cmd: string, args: string[], opts?: Deno.CommandOptions): Deno.Command;
  /** Runs a command in a namespace (host or router) and returns its stdout; throws on failure. */
  run(ns: string, args: string[]): Promise<string>;
  /** Takes a host behind a router to another router's LAN, as a laptop joins another Wi-Fi: its interface
   * (and with it its address and every connection over it) goes, a new one comes on the other LAN with the
   * next free address there and the default route through that router. Resolves with the new address. */
  move(host: string, router: string): Promise<string>;
  /** Takes a host behind a router off its LAN (its interface goes; only loopback is left), as a laptop
   * whose Wi-Fi is off, until `move` puts it on a LAN again. */
  unplug(host: string): Promise<void>;
  close(): Promise<void>;
}

/** True when this process can build a lab: root, with ip and nft. */
export function labAvailable(): boolean {
  return Deno.uid() === 0 && haveTool("ip") && haveTool("nft");
}

async function sh(args: string[], input?: string): Promise<string> {
  const c = new Deno.Command(args[0], {
    args: args.slice(1),
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const p = c.spawn();
  if (input !== undefined) {
    const w = p.stdin.getWriter();
    await w.write(new TextEncoder().encode(input));
    await w.close();
  }
  const out = await p.output();
  if (!out.success) {
    throw new Error(`${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

let labCount = 0;

/** Builds the topology; on any failure, removes what was made and rethrows. */
export async function buildLab(spec: LabSpec): Promise<Lab> {
  // Namespaces and interfaces carry a prefix unique to this process and lab (interface names: <= 15 chars).
  const id = `${(Deno.pid % 10000).toString(36)}${(labCount++).toString(36)}`;
  const made: string[] = [];
  const nsName = (n: string) => `sc${id}-${n}`;
  const ns = async (n: string) => {
    const name = nsName(n);
    await sh(["ip", "netns", "add", name]);
    made.push(name);
    await sh(["ip", "-n", name, "link", "set", "lo", "up"]);
    return name;
  };
  let ifCount = 0;
  /** A veth pair between two namespaces, each end named and addressed. */
  const link = async (a: string, aIf: string, b: string, bIf: string) => {
    const tmpA = `v${id}a${ifCount}`;
    const tmpB = `v${id}b${ifCount++}`;
    await sh(["ip", "link", "add", tmpA, "type", "veth", "peer", "name", tmpB]);
    await sh(["ip", "link", "set", tmpA, "netns", a]);
    await sh(["ip", "link", "set", tmpB, "netns", b]);
    await sh(["ip", "-n", a, "link", "set", tmpA, "name", aIf]);
    await sh(["ip", "-n", b, "link", "set", tmpB, "name", bIf]);
    await sh(["ip", "-n", a, "link", "set", aIf, "up"]);
    await sh(["ip", "-n", b, "link", "set", bIf, "up"]);
  };
  const hosts = new Map<string, LabHost>();
  const routerWan = new Map<string, string>();
  const routerLan = new Map<string, string>();
  const routerLan6 = new Map<string, string>();
  const lanOf = new Map<string, { ns: string; subnet: string; next: number; subnet6: string | null }>();
  /** Puts a host on a router's LAN: its interface, the next free address there (IPv6 too in an ipv6 lab)
   * and the default routes through the router. */
  const joinLan = async (
    hns: string,
    name: string,
    lan: { ns: string; subnet: string; next: number; subnet6: string | null },
  ) => {
    const n = lan.next++;
    const address = `${lan.subnet}.${n}`;
    const port = `l${name}`.slice(0, 15);
    await link(hns, "eth0", lan.ns, port);
    await sh(["ip", "-n", lan.ns, "link", "set", port, "master", "lan"]);
    await sh(["ip", "-n", hns, "addr", "add", `${address}/24`, "dev", "eth0"]);
    await sh(["ip", "-n", hns, "route", "add", "default", "via", `${lan.subnet}.1`]);
    let address6: string | null = null;
    if (lan.subnet6) {
      address6 = `${lan.subnet6}::${n}`;
      await sh(["ip", "-n", hns, "-6", "addr", "add", `${address6}/64`, "dev", "eth0", "nodad"]);
      await sh(["ip", "-n", hns, "-6", "route", "add", "default", "via", `${lan.subnet6}::1`]);
    }
    return { address, address6 };
  };
  try {
    const net = await ns("net");
    await sh(["ip", "-n", net, "link", "add", "br0", "type", "bridge"]);
    await sh(["ip", "-n", net, "link", "set", "br0", "up"]);
    let publicHost = 1;
    /** Namespaces on the public segment, with their IPv6 address there (ipv6 labs). */
    const public6: { ns: string; address6: string }[] = [];
    /** `nodad`: usable at once, not after duplicate address detection's second or two. */
    const addr6 = (nsn: string, address6: string, dev: string) =>
      sh(["ip", "-n", nsn, "-6", "addr", "add", `${address6}/64`, "dev", dev, "nodad"]);
    const onPublic = async (nsn: string, ifName: string) => {
      const port = `p${publicHost}`;
      await link(nsn, ifName, net, port);
      await sh(["ip", "-n", net, "link", "set", port, "master", "br0"]);
      const n = publicHost++;
      const addr = `198.18.0.${n}`;
      await sh(["ip", "-n", nsn, "addr", "add", `${addr}/24`, "dev", ifName]);
      let address6: string | null = null;
      if (spec.ipv6) {
        address6 = `2001:db8:ff::${n}`;
        await addr6(nsn, address6, ifName);
        public6.push({ ns: nsn, address6 });
      }
      return { addr, address6 };
    };
    const routers = spec.routers ?? [];
    if (spec.ipv6 && routers.some((r) => r.behind)) {
      throw new Error("an ipv6 lab has no router behind another");
    }
    /** Each router's LAN prefix and its WAN address, for the routes of the public segment. */
    const lan6: { prefix: string; via: string }[] = [];
    let subnet = 1;
    // Routers in order: one behind another must come after it.
    for (const r of routers) {
      const rns = await ns(r.name);
      await sh(["ip", "netns", "exec", rns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
      let wan: string;
      if (r.behind) {
        const up = lanOf.get(r.behind);
        if (!up) throw new Error(`router ${r.name} is behind ${r.behind}, which is not defined before it`);
        wan = `${up.subnet}.${up.next++}`;
        await link(rns, "wan", up.ns, `l${r.name}`.slice(0, 15));
        await sh(["ip", "-n", up.ns, "link", "set", `l${r.name}`.slice(0, 15), "master", "lan"]);
        await sh(["ip", "-n", rns, "addr", "add", `${wan}/24`, "dev", "wan"]);
        await sh(["ip", "-n", rns, "route", "add", "default", "via", `${up.subnet}.1`]);
      } else {
        const w = await onPublic(rns, "wan");
        wan = w.addr;
        if (w.address6) {
          await sh(["ip", "netns", "exec", rns, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"]);
          lan6.push({ prefix: `2001:db8:${subnet}::`, via: w.address6 });
        }
      }
      routerWan.set(r.name, wan);
      // The carrier's LAN is shared address space (RFC 6598), home LANs are 192.168.N.0/24.
      const lanSubnet = routers.some((o) => o.behind === r.name)
        ? `100.64.${subnet++}`
        : `192.168.${subnet++}`;
      await sh(["ip", "-n", rns, "link", "add", "lan", "type", "bridge"]);
      await sh(["ip", "-n", rns, "link", "set", "lan", "up"]);
      await sh(["ip", "-n", rns, "addr", "add", `${lanSubnet}.1/24`, "dev", "lan"]);
      if (spec.ipv6) {
        await addr6(rns, `2001:db8:${subnet - 1}::1`, "lan");
        routerLan6.set(r.name, `2001:db8:${subnet - 1}::1`);
      }
      lanOf.set(r.name, {
        ns: rns,
        subnet: lanSubnet,
        next: 10,
        subnet6: spec.ipv6 ? `2001:db8:${subnet - 1}` : null,
      });
      routerLan.set(r.name, `${lanSubnet}.1`);
      // `pre` is empty: a port mapping (portmap_responder.ts) adds its DNAT rules there.
      const rules = `table ip lab {
  chain pre { type nat hook prerouting priority -100;
  }
  chain post { type nat hook postrouting priority 100;
    oifname "wan" masquerade${r.nat === "symmetric" ? " random,fully-random" : ""}
  }
}
table inet labf {
  chain forward { type filter hook forward priority 0; policy accept;
    ct state established,related accept
    ct status dnat accept
    iifname "wan" drop
  }${
        r.silentDrop
          ? `
  chain input { type filter hook input priority 0; policy accept;
    iifname "wan" ct state new tcp flags & (syn|ack) == syn drop
  }`
          : ""
      }
}`;
      await sh(["ip", "netns", "exec", rns, "nft", "-f", "-"], rules);
    }
    for (const h of spec.hosts) {
      const hns = await ns(h.name);
      let address: string;
      let address6: string | null;
      if (h.router) {
        const lan = lanOf.get(h.router);
        if (!lan) throw new Error(`host ${h.name}: no router ${h.router}`);
        ({ address, address6 } = await joinLan(hns, h.name, lan));
      } else {
        ({ addr: address, address6 } = await onPublic(hns, "eth0"));
      }
      if (h.firewall) {
        await sh(
          ["ip", "netns", "exec", hns, "nft", "-f", "-"],
          `table inet lab {
  chain input { type filter hook input priority 0; policy accept;
    iifname "lo" accept
    ct state established,related accept
    ct state new drop
  }
}`,
        );
      }
      hosts.set(h.name, { name: h.name, ns: hns, address, address6, router: h.router ?? null });
    }
    // The public segment reaches each home LAN's IPv6 prefix through that home's router.
    for (const p of public6) {
      for (const l of lan6) {
        if (l.via === p.address6) continue;
        await sh(["ip", "-n", p.ns, "-6", "route", "add", `${l.prefix}/64`, "via", l.via]);
      }
    }
  } catch (e) {
    await removeAll(made);
    throw e;
  }
  /** Hosts without a LAN for now (unplug). */
  const unplugged = new Set<string>();
  const host = (name: string): LabHost => {
    const h = hosts.get(name);
    if (!h) throw new Error(`no host ${name} in this lab`);
    return h;
  };
  return {
    hosts,
    routerWan,
    host,
    routerLan,
    routerLan6,
    nsOf: (name) => hosts.get(name)?.ns ?? nsName(name),
    command(name, cmd, args, opts = {}) {
      const ns = hosts.get(name)?.ns ?? (routerWan.has(name) ? nsName(name) : host(name).ns);
      return new Deno.Command("ip", { ...opts, args: ["netns", "exec", ns, cmd, ...args] });
    },
    run(nsn, args) {
      const target = hosts.get(nsn)?.ns ?? nsName(nsn);
      return sh(["ip", "netns", "exec", target, ...args]);
    },
    async unplug(name) {
      const h = host(name);
      if (!h.router) throw new Error(`unplug: ${name} is not behind a router`);
      // Deleting one end of a veth pair deletes the other (the router's bridge port).
      await sh(["ip", "-n", h.ns, "link", "del", "eth0"]);
      unplugged.add(name);
    },
    async move(name, router) {
      const h = host(name);
      const lan = lanOf.get(router);
      if (!h.router || !lan) {
        throw new Error(`move: ${name} is not behind a router, or there is no ${router}`);
      }
      if (!unplugged.delete(name)) await sh(["ip", "-n", h.ns, "link", "del", "eth0"]);
      const { address, address6 } = await joinLan(h.ns, name, lan);
      h.address = address;
      h.address6 = address6;
      h.router = router;
      return address;
    },
    close: () => removeAll(made),
  };
}

async function removeAll(names: string[]): Promise<void> {
  // Deleting a namespace deletes the interfaces in it (and the peer ends of its veth pairs).
  for (const n of names.reverse()) await sh(["ip", "netns", "del", n]).catch(() => {});
}
