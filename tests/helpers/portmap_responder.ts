/**
 * A lab router's port-mapping service (tests/helpers/netlab.ts) speaking NAT-PMP (RFC 6886), PCP MAP
 * (RFC 6887) and a minimal UPnP IGD v2 (SSDP answer on 239.255.255.250:1900, a device description, the
 * WANIPConnection:2 SOAP actions AddAnyPortMapping, AddPortMapping, DeletePortMapping and
 * GetExternalIPAddress). It exists because Debian's miniupnpd 2.3.1 refuses every mapping when the router's
 * outside address is a reserved one, which every lab range is (it refuses `ext_ip=` with such an address, and
 * checks what STUN reports against the same list: see docs/protocol.md "Port mapping"). Each mapping is a real nftables DNAT rule in the router's `lab` table,
 * shared by the three protocols as on a real router, so a peer's connection to the router's WAN port really
 * reaches the host. Runs inside the router's namespace:
 *   deno run --allow-net --allow-run portmap_responder.ts LAN WAN [--protocols=pmp,pcp,upnp] [--pcp-lifetime=S]
 *     [--lan6=A]        (an ipv6 lab: PCP is answered on the router's LAN IPv6 address A too, where a MAP
 *                        for a host's IPv6 address opens a pinhole in the router's firewall: an accept rule
 *                        for that address and port in the `labf` forward chain; `--protocols=pcp6` answers
 *                        PCP over IPv6 only, as a router that has no NAT to map; `--protocols=upnp6`
 *                        answers SSDP on ff02::c and UPnP-IGD 2's WANIPv6FirewallControl:1 at
 *                        [A]:5000 instead, where AddPinhole opens the same rule for the sender's own
 *                        address, UpdatePinhole renews and DeletePinhole closes it)
 *     [--ports-taken]   (every port asked for is held by another host: the router assigns one from 20000;
 *                        with --igd=1 only the port first asked for is, and the client must pick another)
 *     [--igd=1]         (UPnP as an InternetGatewayDevice:1 with WANIPConnection:1: no AddAnyPortMapping)
 *     [--ppp]           (with --igd=1: the service is WANPPPConnection:1, as on routers that dial PPPoE)
 *     [--permanent-only] (with --igd=1: a lease other than 0 is refused with 725, as many v1 routers do)
 *     [--forget-after=S] (S seconds after its first mapping the router forgets them all, as a reboot does)
 *     [--announce]      (a restart (--forget-after, or SIGUSR1 at any time) is told as routers tell it: its
 *                        epoch starts again from 0, and from its port 5351 go a PCP ANNOUNCE (RFC 6887
 *                        §14.1.1) to 224.0.0.1:5350 on its LAN (with --lan6 to [ff02::1]:5350 too, from its
 *                        link-local address, as a multicast to ff02::1 leaves a router) and a
 *                        NAT-PMP public address announcement (RFC 6886 §3.2.1) to 224.0.0.1:5350, each for the
 *                        protocols it speaks; a new public address (--wan-moves-to) is announced over NAT-PMP)
 * SIGUSR1 restarts the router: every mapping and pinhole forgotten, as a reboot does.
 *     [--wan-moves-to=A] (2 s after its first mapping the router's public address becomes A, added to its
 *                        WAN interface: as when the ISP hands out another address)
 *     [--drop-searches=N] (the first N M-SEARCHes for this router's IGD version are not answered, as when
 *                        multicast is lost)
 * and prints `ready`, then one line per request and change, which the tests read:
 *   ASK <pmp|pcp|ssdp|http|soap> <from> [detail]  every request that arrives, answered or not (for a NAT-PMP
 *                                                or PCP mapping, the detail is `lifetime=S` as asked; for a
 *                                                SOAP action its name, and `lease=S` for AddPortMapping)
 *   MAP <proto> <ext> -> <host>:<port>          a rule installed
 *   RENEW <proto> <ext>                         a request for a mapping that exists (its lease extended)
 *   UNMAP <proto> <ext>                         a rule removed
 *   FORGOT                                      every rule and pinhole removed (--forget-after, SIGUSR1)
 *   ANNOUNCED <pcp|pcp6 from A|pmp>             an announcement sent (--announce)
 *   MOVED <address>                             the public address changed (--wan-moves-to)
 *   ASK pcp6 <from> lifetime=S                  a PCP request over IPv6 (--lan6)
 *   ASK <ssdp6|http6|soap6> <from> [detail]    the same over IPv6 (--protocols=upnp6)
 *   PINHOLE <address> <port>                    a pinhole opened (RENEW pcp6|upnp6 ... for one open)
 *   UNPINHOLE <address> <port>                  a pinhole closed
 * Only the protocols named are answered; a NAT-PMP-only router answers PCP with "unsupported version" as
 * RFC 6886 §3.5 says, a PCP-only one ignores NAT-PMP.
 */
import dgram from "node:dgram";
import { ipText, sameIp } from "../../client/pcp_wire.ts";

const lan = Deno.args[0];
/** The public address reported (it changes with --wan-moves-to). */
let wan = Deno.args[1];
const flag = (name: string) => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const protocols = new Set((flag("protocols") ?? "pmp").split(","));
/** The router's LAN IPv6 address (an ipv6 lab): PCP is answered there too, opening firewall pinholes. */
const lan6 = flag("lan6");
/** The longest PCP lease granted (s): short in a test that watches renewals. */
const pcpLifetime = Number(flag("pcp-lifetime") ?? 7200);
const portsTaken = Deno.args.includes("--ports-taken");
const igdVersion = flag("igd") === "1" ? 1 : 2;
const ppp = Deno.args.includes("--ppp");
const permanentOnly = Deno.args.includes("--permanent-only");
let dropSearches = Number(flag("drop-searches") ?? 0);
const forgetAfterS = Number(flag("forget-after") ?? 0);
let forgetArmed = forgetAfterS > 0;
const movesTo = flag("wan-moves-to");
let moveArmed = movesTo !== undefined;
/** Where a router picks ports when the one asked for is taken. */
const FIRST_FREE = 20000;
let started = Date.now();
const announceRestart = Deno.args.includes("--announce");
/** What sends each protocol's announcement (set where its socket is opened). */
const announcers = new Map<"pcp" | "pcp6" | "pmp", () => void | Promise<void>>();

/** A PCP unsolicited ANNOUNCE (§7.2 header: version 2, R=1 with opcode 0, result 0, lifetime 0, the epoch). */
function announcement(): Buffer {
  const b = Buffer.alloc(24);
  b[0] = 2;
  b[1] = 0x80;
  b.writeUInt32BE(epoch(), 8);
  return b;
}

/** A NAT-PMP public address announcement (RFC 6886 §3.2: version 0, opcode 128, result 0, epoch, address). */
function pmpAnnouncement(): Buffer {
  const r = Buffer.alloc(12);
  r.writeUInt8(128, 1);
  r.writeUInt32BE(epoch(), 4);
  wan.split(".").forEach((o, i) => r.writeUInt8(Number(o), 8 + i));
  return r;
}

const announced = (what: string) => (err: Error | null) =>
  console.log(err ? `ANNOUNCE ${what} failed: ${err.message}` : `ANNOUNCED ${what}`);
const epoch = () => Math.floor((Date.now() - started) / 1000);

interface Rule {
  handle: number;
  host: string;
  port: number;
}
/** External port -> its DNAT rule. */
const rules = new Map<number, Rule>();

async function nft(args: string[]): Promise<string> {
  const out = await new Deno.Command("nft", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

/** One change of the rule table at a time (the three protocols' requests arrive together). */
let queue: Promise<unknown> = Promise.resolve();
function serial<T>(f: () => Promise<T>): Promise<T> {
  const next = queue.then(f, f);
  queue = next.catch(() => {});
  return next;
}

/** Installs ext -> host:port, or keeps the same one (a renewal); picks another external port when `any`
 * and ext forwards elsewhere; null when taken and not `any`. */
function mapRule(proto: string, ext: number, host: string, port: number, any: boolean, taken = portsTaken) {
  return serial(() => mapRuleNow(proto, ext, host, port, any, taken));
}

async function mapRuleNow(
  proto: string,
  ext: number,
  host: string,
  port: number,
  any: boolean,
  taken: boolean,
) {
  let e = ext || port;
  const same = (r: Rule | undefined) => r && r.host === host && r.port === port;
  if ((rules.has(e) || taken) && !same(rules.get(e))) {
    if (!any) return null;
    e = FIRST_FREE;
    while (rules.has(e) && !same(rules.get(e))) e++;
  }
  if (rules.has(e)) {
    console.log(`RENEW ${proto} ${e}`);
    return e;
  }
  const out = await nft([
    "--echo",
    "--handle",
    "add",
    "rule",
    "ip",
    "lab",
    "pre",
    "iifname",
    "wan",
    "tcp",
    "dport",
    String(e),
    "dnat",
    "to",
    `${host}:${port}`,
  ]);
  rules.set(e, { handle: Number(/# handle (\d+)/.exec(out)![1]), host, port });
  console.log(`MAP ${proto} ${e} -> ${host}:${port}`);
  if (moveArmed) {
    moveArmed = false;
    setTimeout(async () => {
      await new Deno.Command("ip", { args: ["addr", "add", `${movesTo}/24`, "dev", "wan"] }).output();
      wan = movesTo!;
      console.log(`MOVED ${wan}`);
      if (announceRestart) announcers.get("pmp")?.();
    }, 2000);
  }
  if (forgetArmed) {
    forgetArmed = false;
    setTimeout(restart, forgetAfterS * 1000);
  }
  return e;
}

/** A restart: every mapping and pinhole forgotten; with --announce the epoch begins again and is announced. */
function restart(): Promise<void> {
  return serial(async () => {
    for (const r of rules.values()) {
      await nft(["delete", "rule", "ip", "lab", "pre", "handle", String(r.handle)]);
    }
    rules.clear();
    for (const handle of pinholes.values()) {
      await nft(["delete", "rule", "inet", "labf", "forward", "handle", String(handle)]);
    }
    pinholes.clear();
    console.log("FORGOT");
    if (announceRestart) {
      started = Date.now();
      for (const send of announcers.values()) await send();
    }
  });
}
Deno.addSignalListener("SIGUSR1", () => void restart());

/** Removes the rules of `host` (for external port `ext`, or all its rules to internal `port` when ext is
 * 0); true when one was there. */
function unmapRules(proto: string, host: string, ext: number, port: number): Promise<boolean> {
  return serial(() => unmapRulesNow(proto, host, ext, port));
}

async function unmapRulesNow(proto: string, host: string, ext: number, port: number): Promise<boolean> {
  let found = false;
  for (const [e, r] of [...rules]) {
    if (r.host !== host || (ext !== 0 ? e !== ext : r.port !== port)) continue;
    await nft(["delete", "rule", "ip", "lab", "pre", "handle", String(r.handle)]);
    rules.delete(e);
    console.log(`UNMAP ${proto} ${e}`);
    found = true;
  }
  return found;
}

// --- NAT-PMP and PCP, both on UDP 5351 (told apart by the version byte) ---

const v4Mapped = (ip: string) => [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, ...ip.split(".").map(Number)];

async function natPmp(b: Buffer, from: dgram.RemoteInfo): Promise<Buffer | null> {
  const op = b[1];
  if (op === 0) {
    const r = Buffer.alloc(12);
    r.writeUInt8(128, 1);
    r.writeUInt32BE(epoch(), 4);
    wan.split(".").forEach((o, i) => r.writeUInt8(Number(o), 8 + i));
    return r;
  }
  if (b.length < 12) return null;
  const internal = b.readUInt16BE(4);
  let external = b.readUInt16BE(6) || internal;
  const lifetime = b.readUInt32BE(8);
  let result = 0;
  try {
    if (op !== 2) result = 5; // only TCP here
    else if (lifetime === 0) await unmapRules("pmp", from.address, 0, internal);
    else external = (await mapRule("pmp", external, from.address, internal, true))!;
  } catch (e) {
    console.error(String(e));
    result = 3; // network failure
    external = 0;
  }
  const r = Buffer.alloc(16);
  r.writeUInt8(128 + op, 1);
  r.writeUInt16BE(result, 2);
  r.writeUInt32BE(epoch(), 4);
  r.writeUInt16BE(internal, 8);
  r.writeUInt16BE(lifetime === 0 ? 0 : external, 10);
  r.writeUInt32BE(lifetime, 12);
  return r;
}

/** RFC 6887 §7.2 + §11.1: a MAP response echoing the request's nonce, protocol and internal port. */
function pcpAnswer(
  req: Buffer,
  result: number,
  lifetime: number,
  external: number,
  externalIp: number[] | Uint8Array = v4Mapped(result === 0 ? wan : "0.0.0.0"),
): Buffer {
  const r = Buffer.alloc(60);
  r[0] = 2;
  r[1] = 0x80 | (req[1] & 0x7f);
  r[3] = result;
  r.writeUInt32BE(lifetime, 4);
  r.writeUInt32BE(epoch(), 8);
  req.copy(r, 24, 24, 44); // nonce, protocol, reserved, internal port
  r.writeUInt16BE(external, 42);
  Buffer.from(externalIp).copy(r, 44);
  return r;
}

/** Pinholes opened over IPv6 PCP: "address port" -> the handle of their accept rule. */
const pinholes = new Map<string, number>();

/** Opens the firewall for inbound TCP to `addr`:`port` (an accept rule in the forward chain), or keeps the
 * one open (a renewal by `proto`). */
function openPinhole(proto: string, addr: string, port: number): Promise<void> {
  const key = `${addr} ${port}`;
  return serial(async () => {
    if (pinholes.has(key)) {
      console.log(`RENEW ${proto} ${key}`);
      return;
    }
    const out = await nft([
      "--echo",
      "--handle",
      "insert",
      "rule",
      "inet",
      "labf",
      "forward",
      "iifname",
      "wan",
      "ip6",
      "daddr",
      addr,
      "tcp",
      "dport",
      String(port),
      "accept",
    ]);
    pinholes.set(key, Number(/# handle (\d+)/.exec(out)![1]));
    console.log(`PINHOLE ${key}`);
  });
}

/** Closes the pinhole `key` ("address port"), if open. */
function closePinhole(key: string): Promise<void> {
  return serial(async () => {
    const handle = pinholes.get(key);
    if (handle === undefined) return;
    await nft(["delete", "rule", "inet", "labf", "forward", "handle", String(handle)]);
    pinholes.delete(key);
    console.log(`UNPINHOLE ${key}`);
  });
}

/** PCP MAP over IPv6 (RFC 6887 §1, §11.3): no translation here, so a mapping is a pinhole in the forward
 * chain's firewall for the client's own address and port, and the answer names both as the external end. */
async function pcp6(b: Buffer, from: dgram.RemoteInfo): Promise<Buffer | null> {
  if (b.length < 60 || b.length % 4 !== 0 || (b[1] & 0x80) !== 0) return null;
  if ((b[1] & 0x7f) !== 1) return pcpAnswer(b, 4, 0, 0, new Uint8Array(16));
  const lifetime = b.readUInt32BE(4);
  const internal = b.readUInt16BE(40);
  const client = new Uint8Array(b.subarray(8, 24));
  if (!sameIp(ipText(client), from.address)) return pcpAnswer(b, 12, 0, 0, new Uint8Array(16));
  if (b[36] !== 6) return pcpAnswer(b, 9, 0, 0, new Uint8Array(16));
  const addr = ipText(client);
  const key = `${addr} ${internal}`;
  try {
    if (lifetime === 0) await closePinhole(key);
    else await openPinhole("pcp6", addr, internal);
  } catch (e) {
    console.error(String(e));
    return pcpAnswer(b, 7, 0, 0, new Uint8Array(16));
  }
  return lifetime === 0
    ? pcpAnswer(b, 0, 0, 0, client)
    : pcpAnswer(b, 0, Math.min(lifetime, pcpLifetime), internal, client);
}

async function pcp(b: Buffer, from: dgram.RemoteInfo): Promise<Buffer | null> {
  if (b.length < 24 || b.length % 4 !== 0 || (b[1] & 0x80) !== 0) return null;
  if ((b[1] & 0x7f) !== 1 || b.length < 60) {
    const padded = Buffer.alloc(60);
    b.copy(padded, 0, 0, Math.min(60, b.length));
    return pcpAnswer(padded, 4, 0, 0); // UNSUPP_OPCODE: MAP only here
  }
  const lifetime = b.readUInt32BE(4);
  const internal = b.readUInt16BE(40);
  const suggested = b.readUInt16BE(42);
  // The client's address in the packet must be where it came from (§8.1: no NAT between us).
  if (!Buffer.from(v4Mapped(from.address)).equals(b.subarray(8, 24))) return pcpAnswer(b, 12, 0, 0);
  if (b[36] !== 6) return pcpAnswer(b, 9, 0, 0); // UNSUPP_PROTOCOL: TCP only here
  try {
    if (lifetime === 0) {
      await unmapRules("pcp", from.address, 0, internal);
      return pcpAnswer(b, 0, 0, 0);
    }
    const ext = (await mapRule("pcp", suggested, from.address, internal, true))!;
    return pcpAnswer(b, 0, Math.min(lifetime, pcpLifetime), ext);
  } catch (e) {
    console.error(String(e));
    return pcpAnswer(b, 7, 0, 0); // NETWORK_FAILURE
  }
}

if (protocols.has("pmp") || protocols.has("pcp")) {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(5351, lan, () => r()));
  sock.on("message", async (msg: Uint8Array, from: dgram.RemoteInfo) => {
    const b = Buffer.from(msg);
    if (b.length < 2) return;
    const version = b[0];
    const lifetime = version === 0 && b.length >= 12 && b[1] !== 0
      ? ` lifetime=${b.readUInt32BE(8)}`
      : version === 2 && b.length >= 8
      ? ` lifetime=${b.readUInt32BE(4)}`
      : "";
    console.log(
      `ASK ${version === 0 ? "pmp" : version === 2 ? "pcp" : `v${version}`} ${from.address}${lifetime}`,
    );
    let answer: Buffer | null = null;
    if (version === 0 && protocols.has("pmp")) answer = await natPmp(b, from);
    else if (version === 2 && protocols.has("pcp")) answer = await pcp(b, from);
    else if (version !== 0 && protocols.has("pmp") && !protocols.has("pcp")) {
      // RFC 6886 §3.5: "unsupported version", in NAT-PMP's own format.
      answer = Buffer.alloc(8);
      answer.writeUInt8(128 + (b[1] & 0x7f), 1);
      answer.writeUInt16BE(1, 2);
      answer.writeUInt32BE(epoch(), 4);
    }
    if (answer) sock.send(answer, from.port, from.address);
  });
  // Out of the LAN interface (by its address), not along the default route to the WAN.
  sock.setMulticastInterface(lan);
  if (protocols.has("pcp")) {
    announcers.set("pcp", () => sock.send(announcement(), 5350, "224.0.0.1", announced("pcp")));
  }
  if (protocols.has("pmp")) {
    announcers.set("pmp", () => sock.send(pmpAnnouncement(), 5350, "224.0.0.1", announced("pmp")));
  }
}

if (lan6 && (protocols.has("pcp") || protocols.has("pcp6"))) {
  const sock6 = dgram.createSocket("udp6");
  await new Promise<void>((r) => sock6.bind(5351, lan6, () => r()));
  sock6.on("message", async (msg: Uint8Array, from: dgram.RemoteInfo) => {
    const b = Buffer.from(msg);
    if (b.length < 8) return;
    console.log(`ASK pcp6 ${from.address} lifetime=${b.readUInt32BE(4)}`);
    const answer = b[0] === 2 ? await pcp6(b, from) : null;
    if (answer) sock6.send(answer, from.port, from.address);
  });
  // To all nodes of the LAN's link from the router's link-local address (RFC 6724 picks that source for a
  // link-scope destination unless the sender binds another), not from the
  // address chat asks (a socket of its own on that address and port 5351, made once it is needed: the address
  // is tentative for a while after the link comes up).
  let linkLocal: dgram.Socket | null = null;
  announcers.set("pcp6", async () => {
    const out = await new Deno.Command("ip", {
      args: ["-6", "-o", "addr", "show", "dev", "lan", "scope", "link"],
    })
      .output();
    const ll = /inet6 (fe80:[0-9a-f:]+)\//.exec(new TextDecoder().decode(out.stdout))?.[1];
    if (!ll) return console.log("ANNOUNCE pcp6 failed: no link-local address on lan");
    if (!linkLocal) {
      const sock = dgram.createSocket("udp6");
      await new Promise<void>((r) => sock.bind(5351, `${ll}%lan`, () => r()));
      linkLocal = sock;
    }
    linkLocal.send(announcement(), 5350, "ff02::1%lan", announced(`pcp6 from ${ll}`));
  });
}

// --- UPnP IGD v2 (or v1 with --igd=1) ---

const IGD = `urn:schemas-upnp-org:device:InternetGatewayDevice:${igdVersion}`;
const IGD_1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
const WAN_IP = igdVersion === 1 && ppp
  ? "urn:schemas-upnp-org:service:WANPPPConnection:1"
  : `urn:schemas-upnp-org:service:WANIPConnection:${igdVersion}`;
const UUID = "uuid:5ecc4a70-0000-4000-8000-00000000ab1e";
const HTTP_PORT = 5000;

/** A router's device description: IGD version `version` > WANDevice > WANConnectionDevice with one service. */
const describe = (version: number, service: { type: string; id: string; path: string }) =>
  `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
  <specVersion><major>1</major><minor>0</minor></specVersion>
  <device>
    <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:${version}</deviceType>
    <friendlyName>lab router</friendlyName>
    <UDN>${UUID}</UDN>
    <deviceList><device>
      <deviceType>urn:schemas-upnp-org:device:WANDevice:${version}</deviceType>
      <UDN>${UUID}-wan</UDN>
      <deviceList><device>
        <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:${version}</deviceType>
        <UDN>${UUID}-conn</UDN>
        <serviceList><service>
          <serviceType>${service.type}</serviceType>
          <serviceId>urn:upnp-org:serviceId:${service.id}</serviceId>
          <controlURL>/ctl/${service.path}</controlURL>
          <eventSubURL>/evt/${service.path}</eventSubURL>
          <SCPDURL>/${service.path}.xml</SCPDURL>
        </service></serviceList>
      </device></deviceList>
    </device></deviceList>
  </device>
</root>`;

const description = describe(igdVersion, { type: WAN_IP, id: "WANIPConn1", path: "IPConn" });

/** The answer to an M-SEARCH for `st` by a device of type `device` described at `location`. */
const searchAnswer = (st: string, device: string, location: string) =>
  new TextEncoder().encode(
    [
      "HTTP/1.1 200 OK",
      "CACHE-CONTROL: max-age=1800",
      `ST: ${st === "ssdp:all" ? device : st}`,
      `USN: ${UUID}::${st === "ssdp:all" ? device : st}`,
      "EXT:",
      "SERVER: Linux UPnP/2.0 securechat-lab/1",
      `LOCATION: ${location}`,
      "",
      "",
    ].join("\r\n"),
  );

const envelope = (body: string) =>
  `<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>${body}</s:Body></s:Envelope>`;
const xmlResponse = (status: number, body: string) =>
  new Response(body, { status, headers: { "content-type": 'text/xml; charset="utf-8"' } });
const fault = (code: number, text: string) =>
  xmlResponse(
    500,
    envelope(
      `<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>${code}</errorCode><errorDescription>${text}</errorDescription></UPnPError></detail></s:Fault>`,
    ),
  );
const ok = (action: string, inner = "") =>
  xmlResponse(200, envelope(`<u:${action}Response xmlns:u="${WAN_IP}">${inner}</u:${action}Response>`));

async function soap(req: Request, from: string): Promise<Response> {
  const action = /#(\w+)"?$/.exec(req.headers.get("soapaction") ?? "")?.[1] ?? "";
  const body = await req.text();
  const arg = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(body)?.[1] ?? null;
  const lease = action === "AddPortMapping" ? ` lease=${arg("NewLeaseDuration")}` : "";
  console.log(`ASK soap ${from} ${action}${lease}`);
  if (action === "GetExternalIPAddress") {
    return ok(action, `<NewExternalIPAddress>${wan}</NewExternalIPAddress>`);
  }
  // Version 1 has no AddAnyPortMapping.
  if (action === "AddAnyPortMapping" && igdVersion === 1) return fault(401, "Invalid Action");
  if (action === "AddAnyPortMapping" || action === "AddPortMapping") {
    const ext = Number(arg("NewExternalPort"));
    const internal = Number(arg("NewInternalPort"));
    const client = arg("NewInternalClient");
    if (arg("NewProtocol") !== "TCP" || !(internal > 0 && internal < 65536) || !(ext >= 0 && ext < 65536)) {
      return fault(402, "Invalid Args");
    }
    // As miniupnpd's secure mode: a host maps only to itself.
    if (client !== from) return fault(606, "Action not authorized");
    if (igdVersion === 1 && permanentOnly && arg("NewLeaseDuration") !== "0") {
      return fault(725, "OnlyPermanentLeasesSupported");
    }
    // A v1 router with --ports-taken: another host holds the port first asked for (the internal one).
    const taken = igdVersion === 1 ? portsTaken && ext === internal : portsTaken;
    const got = await mapRule("upnp", ext, from, internal, action === "AddAnyPortMapping", taken);
    if (got === null) return fault(718, "ConflictInMappingEntry");
    return ok(action, action === "AddAnyPortMapping" ? `<NewReservedPort>${got}</NewReservedPort>` : "");
  }
  if (action === "DeletePortMapping") {
    const ext = Number(arg("NewExternalPort"));
    if (arg("NewProtocol") !== "TCP" || !(ext > 0 && ext < 65536)) return fault(402, "Invalid Args");
    if (!await unmapRules("upnp", from, ext, 0)) return fault(714, "NoSuchEntryInArray");
    return ok(action);
  }
  return fault(401, "Invalid Action");
}

/** A device's HTTP side on `hostname`: its description, and its service's SOAP actions at `control`. */
function serveDevice(
  hostname: string,
  tag: string,
  desc: string,
  control: string,
  actions: (req: Request, from: string) => Promise<Response>,
): void {
  Deno.serve({ hostname, port: HTTP_PORT, onListen: () => {} }, (req, info) => {
    const from = (info.remoteAddr as Deno.NetAddr).hostname;
    const path = new URL(req.url).pathname;
    if (req.method === "GET" && path === "/rootDesc.xml") {
      console.log(`ASK ${tag} ${from} ${path}`);
      return xmlResponse(200, desc);
    }
    if (req.method === "POST" && path === control) return actions(req, from);
    return new Response("not found", { status: 404 });
  });
}

if (protocols.has("upnp")) {
  serveDevice(lan, "http", description, "/ctl/IPConn", soap);
  const ssdp = dgram.createSocket({ type: "udp4", reuseAddr: true });
  await new Promise<void>((r) => ssdp.bind(1900, "0.0.0.0", () => r()));
  ssdp.addMembership("239.255.255.250", lan);
  ssdp.on("message", (msg: Uint8Array, from: dgram.RemoteInfo) => {
    const text = new TextDecoder().decode(msg);
    if (!text.startsWith("M-SEARCH * HTTP/1.1")) return;
    const st = /^ST:\s*(.+?)\s*$/im.exec(text)?.[1] ?? "";
    console.log(`ASK ssdp ${from.address} ${st}`);
    // A version 2 device answers version 1 searches too (its description then says version 2).
    if (![IGD, IGD_1, "ssdp:all", "upnp:rootdevice"].includes(st)) return;
    if (dropSearches > 0 && st === IGD) {
      dropSearches--;
      console.log(`DROP ssdp ${from.address} ${st}`);
      return;
    }
    ssdp.send(searchAnswer(st, IGD, `http://${lan}:${HTTP_PORT}/rootDesc.xml`), from.port, from.address);
  });
}

// --- UPnP-IGD 2 over IPv6: the WANIPv6FirewallControl:1 service (--protocols=upnp6, with --lan6) ---

const FIREWALL = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1";
const IGD_2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2";

const description6 = describe(2, { type: FIREWALL, id: "WANIPv6Firewall1", path: "IP6FCtl" });

/** Pinholes opened over UPnP: UniqueID -> their "address port" and who opened them. */
const upnpPinholes = new Map<number, { key: string; owner: string }>();
let nextPinholeId = 1;

const ok6 = (action: string, inner = "") =>
  xmlResponse(200, envelope(`<u:${action}Response xmlns:u="${FIREWALL}">${inner}</u:${action}Response>`));

/** The firewall service as miniupnpd runs it in secure mode: a host opens pinholes for itself only. */
async function firewallSoap(req: Request, from: string): Promise<Response> {
  const action = /#(\w+)"?$/.exec(req.headers.get("soapaction") ?? "")?.[1] ?? "";
  const body = await req.text();
  const arg = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(body)?.[1] ?? null;
  const lease = action === "AddPinhole" ? ` lease=${arg("LeaseTime")}` : "";
  console.log(`ASK soap6 ${from} ${action}${lease}`);
  if (action === "GetFirewallStatus") {
    return ok6(
      action,
      "<FirewallEnabled>1</FirewallEnabled><InboundPinholeAllowed>1</InboundPinholeAllowed>",
    );
  }
  if (action === "AddPinhole") {
    const client = arg("InternalClient") ?? "";
    const port = Number(arg("InternalPort"));
    const leaseS = Number(arg("LeaseTime"));
    if (!sameIp(client, from)) return fault(606, "Action not authorized");
    if (arg("Protocol") !== "6") return fault(705, "ProtocolNotSupported");
    if (!(port > 0 && port < 65536)) return fault(706, "InternalPortWildcardingNotAllowed");
    if (!(Number.isInteger(leaseS) && leaseS >= 1 && leaseS <= 86400)) return fault(402, "Invalid Args");
    const key = `${client} ${port}`;
    try {
      await openPinhole("upnp6", client, port);
    } catch (e) {
      console.error(String(e));
      return fault(501, "Action Failed");
    }
    let id = [...upnpPinholes].find(([, p]) => p.key === key)?.[0];
    if (id === undefined) upnpPinholes.set(id = nextPinholeId++, { key, owner: from });
    return ok6(action, `<UniqueID>${id}</UniqueID>`);
  }
  if (action === "UpdatePinhole" || action === "DeletePinhole") {
    const id = Number(arg("UniqueID"));
    const p = upnpPinholes.get(id);
    if (!p) return fault(704, "NoSuchEntry");
    if (!sameIp(p.owner, from)) return fault(606, "Action not authorized");
    if (action === "UpdatePinhole") {
      console.log(`RENEW upnp6 ${p.key}`);
      return ok6(action);
    }
    await closePinhole(p.key);
    upnpPinholes.delete(id);
    return ok6(action);
  }
  return fault(401, "Invalid Action");
}

if (lan6 && protocols.has("upnp6")) {
  serveDevice(lan6, "http6", description6, "/ctl/IP6FCtl", firewallSoap);
  const ssdp6 = dgram.createSocket({ type: "udp6", reuseAddr: true });
  await new Promise<void>((r) => ssdp6.bind(1900, "::", () => r()));
  ssdp6.addMembership("ff02::c", "::%lan");
  ssdp6.on("message", (msg: Uint8Array, from: dgram.RemoteInfo) => {
    const text = new TextDecoder().decode(msg);
    if (!text.startsWith("M-SEARCH * HTTP/1.1")) return;
    const st = /^ST:\s*(.+?)\s*$/im.exec(text)?.[1] ?? "";
    console.log(`ASK ssdp6 ${from.address} ${st}`);
    if (![IGD_2, "ssdp:all", "upnp:rootdevice"].includes(st)) return;
    // A search to the link-scope group comes from the host's link-local address once it has one (RFC 6724
    // prefers the group's scope): the answer goes back on the LAN interface.
    const to = /^fe[89ab]/i.test(from.address) && !from.address.includes("%")
      ? `${from.address}%lan`
      : from.address;
    ssdp6.send(searchAnswer(st, IGD_2, `http://[${lan6}]:${HTTP_PORT}/rootDesc.xml`), from.port, to);
  });
}

console.log("ready");
