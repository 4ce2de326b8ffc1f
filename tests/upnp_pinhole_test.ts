/**
 * The IPv6 pinhole over UPnP (client/upnp_pinhole.ts), against a firewall service of the test's own on IPv6
 * loopback (real HTTP, real SOAP): which descriptions name a usable service, the actions and their
 * arguments (from our own address, for our own address and port, TCP, a lease of at most a day), renewal at
 * half the lease on a fake clock, a router that forgot the pinhole, the refusals a router can answer, and
 * the delete on stop. Then openPinhole asking PCP and UPnP at once: the first pinhole is kept and a later one
 * closed, and when both fail each says why. The SSDP search over IPv6 runs in the network lab only
 * (tests/reach_pinhole_test.ts): a test must not send multicast on the machine's own network.
 */
import assert from "node:assert/strict";
import {
  type FirewallService,
  firewallServiceOf,
  firewallServiceOrWhy,
  MAX_LEASE_S,
  upnpPinhole,
  type UpnpPinholeOptions,
  WAN_IPV6_FIREWALL,
} from "../client/upnp_pinhole.ts";
import { UpnpError } from "../client/upnp_igd1.ts";
import { openPinhole, type Pinhole, PinholeError } from "../client/pinhole.ts";
import { PcpError } from "../client/pcp_wire.ts";
import type { PcpMapping } from "../client/pcp.ts";
import { FakeScheduler } from "./helpers/fake_scheduler.ts";

const IGD_2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2";

/** A parsed description as @achingbrain/ssdp hands it over: IGD > WANDevice > WANConnectionDevice. */
function description(rootType: string, services: { serviceType: string; controlURL: string }[]) {
  return {
    device: {
      deviceType: rootType,
      deviceList: {
        device: {
          deviceType: "urn:schemas-upnp-org:device:WANDevice:2",
          deviceList: {
            device: {
              deviceType: "urn:schemas-upnp-org:device:WANConnectionDevice:2",
              serviceList: { service: services },
            },
          },
        },
      },
    },
  };
}

const BOTH = [
  { serviceType: "urn:schemas-upnp-org:service:WANIPConnection:2", controlURL: "/ctl/IPConn" },
  { serviceType: WAN_IPV6_FIREWALL, controlURL: "/ctl/IP6FCtl" },
];

Deno.test("upnp pinhole: the firewall service of an IGD 2 description, reachable over IPv6", () => {
  const at = new URL("http://[2001:db8:1::1]:5000/rootDesc.xml");
  const svc = firewallServiceOf(at, description(IGD_2, BOTH));
  assert.ok(svc);
  assert.equal(svc.host, "2001:db8:1::1");
  assert.equal(svc.controlUrl.href, "http://[2001:db8:1::1]:5000/ctl/IP6FCtl");
  // No firewall service; a version 1 device; a control URL on another host; only a link-local address.
  assert.equal(firewallServiceOf(at, description(IGD_2, BOTH.slice(0, 1))), null);
  assert.equal(
    firewallServiceOf(at, description("urn:schemas-upnp-org:device:InternetGatewayDevice:1", BOTH)),
    null,
  );
  assert.equal(
    firewallServiceOf(
      at,
      description(IGD_2, [{ serviceType: WAN_IPV6_FIREWALL, controlURL: "http://[2001:db8:66::6]/c" }]),
    ),
    null,
    "another host",
  );
  assert.equal(firewallServiceOf(new URL("http://[fe80::1]:5000/d.xml"), description(IGD_2, BOTH)), null);
  // Why, where a description names the service and it still cannot be used.
  assert.equal(
    firewallServiceOrWhy(new URL("http://[fe80::1]:5000/d.xml"), description(IGD_2, BOTH)),
    "the router at [fe80::1]:5000 offers WANIPv6FirewallControl at a link-local address only (not used)",
  );
  assert.match(
    String(
      firewallServiceOrWhy(
        at,
        description(IGD_2, [{ serviceType: WAN_IPV6_FIREWALL, controlURL: "http://[2001:db8:66::6]/c" }]),
      ),
    ),
    /sends its control to another host/,
  );
  assert.equal(firewallServiceOrWhy(at, description(IGD_2, BOTH.slice(0, 1))), null, "names none");
  assert.equal(firewallServiceOf(new URL("http://192.168.1.1:5000/d.xml"), description(IGD_2, BOTH)), null);
});

interface Call {
  action: string;
  args: Record<string, string>;
  from: string;
}

const envelope = (body: string) =>
  `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>${body}` +
  `</s:Body></s:Envelope>`;

/** A firewall service on [::1]: answers each action with `answer(call)` (the inner XML of the response, or
 * a UPnP error code), and records every call. */
function firewall(answer: (c: Call) => string | number) {
  const calls: Call[] = [];
  const server = Deno.serve({ hostname: "::1", port: 0, onListen: () => {} }, async (req, info) => {
    const action = /#(\w+)"$/.exec(req.headers.get("soapaction") ?? "")?.[1] ?? "";
    const body = await req.text();
    const args: Record<string, string> = {};
    for (const m of body.matchAll(/<(\w+)>([^<]*)<\/\1>/g)) args[m[1]] = m[2];
    const call = { action, args, from: (info.remoteAddr as Deno.NetAddr).hostname };
    calls.push(call);
    const a = answer(call);
    const headers = { "content-type": 'text/xml; charset="utf-8"' };
    if (typeof a === "number") {
      return new Response(
        envelope(
          `<s:Fault><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>${a}</errorCode>` +
            `<errorDescription>refused</errorDescription></UPnPError></detail></s:Fault>`,
        ),
        { status: 500, headers },
      );
    }
    return new Response(
      envelope(`<u:${action}Response xmlns:u="${WAN_IPV6_FIREWALL}">${a}</u:${action}Response>`),
      { headers },
    );
  });
  const service: FirewallService = {
    host: "::1",
    controlUrl: new URL(`http://[::1]:${server.addr.port}/ctl/IP6FCtl`),
    serviceType: WAN_IPV6_FIREWALL,
  };
  return { calls, service, close: () => server.shutdown() };
}

const open = "<FirewallEnabled>1</FirewallEnabled><InboundPinholeAllowed>1</InboundPinholeAllowed>";

/** A pinhole for [::1]:10042 asked of `fw`, with the test's lease and more. */
const ask = (fw: { service: FirewallService }, o: Partial<UpnpPinholeOptions> & { leaseMs: number }) =>
  upnpPinhole({ address: "::1", port: 10042, timeoutMs: 3000, service: fw.service, ...o });

Deno.test("upnp pinhole: asked from our address for it, renewed at half the lease, deleted on stop", async () => {
  const fw = firewall((c) =>
    c.action === "GetFirewallStatus" ? open : c.action === "AddPinhole" ? "<UniqueID>7</UniqueID>" : ""
  );
  const s = new FakeScheduler();
  try {
    const p = await ask(fw, {
      leaseMs: 600_000,
      scheduler: s,
    });
    assert.deepEqual([p.router, p.lifetime], ["::1", 600]);
    assert.deepEqual(fw.calls.map((c) => c.action), ["GetFirewallStatus", "AddPinhole"]);
    assert.deepEqual(fw.calls[1].args, {
      RemoteHost: "",
      RemotePort: "0",
      InternalClient: "::1",
      InternalPort: "10042",
      Protocol: "6",
      LeaseTime: "600",
    });
    assert.ok(fw.calls.every((c) => c.from === "::1"), "sent from the address the pinhole is for");
    // Renewed at half the lease, again and again.
    await s.tick(299_000);
    assert.equal(fw.calls.length, 2, "not before half the lease");
    await s.tick(1_000);
    // Renewed, and the next renewal armed once the router answered.
    await waitFor(() => fw.calls.length === 3 && s.pending === 1);
    assert.deepEqual(fw.calls[2], {
      action: "UpdatePinhole",
      args: { UniqueID: "7", NewLeaseTime: "600" },
      from: "::1",
    });
    await s.tick(300_000);
    await waitFor(() => fw.calls.length === 4 && s.pending === 1);
    await p.stop(AbortSignal.timeout(3000));
    assert.deepEqual(fw.calls.at(-1), { action: "DeletePinhole", args: { UniqueID: "7" }, from: "::1" });
    await s.tick(600_000);
    assert.equal(fw.calls.length, 5, "no renewal after stop");
  } finally {
    await fw.close();
  }
});

/** Lets the real sockets answer (the fake clock only fires the timers). */
async function waitFor(f: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("upnp pinhole: a router that forgot it reports it lost", async () => {
  const fw = firewall((c) =>
    c.action === "GetFirewallStatus" ? open : c.action === "AddPinhole" ? "<UniqueID>1</UniqueID>" : 704
  );
  const s = new FakeScheduler();
  const lost: string[] = [];
  try {
    const p = await ask(fw, {
      leaseMs: 60_000,
      scheduler: s,
      onLost: (why) => lost.push(why),
    });
    await s.tick(30_000);
    await waitFor(() => lost.length === 1);
    assert.deepEqual(lost, ["the router forgot it"]);
    await s.tick(120_000);
    assert.equal(fw.calls.filter((c) => c.action === "UpdatePinhole").length, 1, "not renewed after that");
    await p.stop(AbortSignal.timeout(3000));
  } finally {
    await fw.close();
  }
});

Deno.test("upnp pinhole: a firewall that is off, or takes no pinholes, or refuses, opens nothing", async () => {
  const cases: { answer: (c: Call) => string | number; code: string; text: RegExp }[] = [
    {
      answer: () => "<FirewallEnabled>0</FirewallEnabled><InboundPinholeAllowed>1</InboundPinholeAllowed>",
      code: "UPNP_NO_SERVICE",
      text: /firewall of ::1 is off/,
    },
    {
      answer: () => "<FirewallEnabled>1</FirewallEnabled><InboundPinholeAllowed>0</InboundPinholeAllowed>",
      code: "UPNP_NO_SERVICE",
      text: /allows no inbound pinholes/,
    },
    { answer: (c) => c.action === "GetFirewallStatus" ? open : 606, code: "UPNP_FAULT", text: /606/ },
    {
      answer: (c) => c.action === "GetFirewallStatus" ? open : "<UniqueID>many</UniqueID>",
      code: "UPNP_BAD_ANSWER",
      text: /not a pinhole id/,
    },
  ];
  for (const k of cases) {
    const fw = firewall(k.answer);
    try {
      await assert.rejects(
        ask(fw, { leaseMs: 60_000 }),
        (e) => e instanceof UpnpError && e.code === k.code && k.text.test(e.message),
      );
      assert.equal(fw.calls.filter((c) => c.action === "DeletePinhole").length, 0);
    } finally {
      await fw.close();
    }
  }
});

Deno.test("upnp pinhole: a lease longer than a day is asked as a day", async () => {
  const fw = firewall((c) => c.action === "GetFirewallStatus" ? open : "<UniqueID>3</UniqueID>");
  try {
    const p = await ask(fw, {
      leaseMs: 7 * 86_400_000,
      scheduler: new FakeScheduler(),
    });
    assert.equal(p.lifetime, MAX_LEASE_S);
    assert.equal(fw.calls[1].args.LeaseTime, String(MAX_LEASE_S));
    await p.stop(AbortSignal.timeout(3000));
  } finally {
    await fw.close();
  }
});

/** A PCP or UPnP client that opens after `ms` on the real clock, or fails then. */
function opensAfter<T>(ms: number, value: T): () => Promise<T> {
  return () => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));
}

function failsAfter(ms: number, error: Error): () => Promise<never> {
  return () => new Promise<never>((_, reject) => setTimeout(() => reject(error), ms));
}

Deno.test("pinhole: PCP and UPnP are asked at once; the first reported, a later one kept and closed with it", async () => {
  const closed: string[] = [];
  const pcp = opensAfter<PcpMapping>(10, {
    externalHost: "2001:db8:1::10",
    externalPort: 10042,
    lifetime: 600,
    stop: () => Promise.resolve(void closed.push("PCP")),
  });
  const upnp = opensAfter(60, {
    router: "2001:db8:1::1",
    lifetime: 600,
    stop: () => Promise.resolve(void closed.push("UPnP")),
  });
  const p: Pinhole = await openPinhole("2001:db8:1::10", 10042, {
    router: "2001:db8:1::1",
    timeoutMs: 3000,
    leaseMs: 600_000,
    log: () => {},
    map: pcp,
    upnp,
  });
  assert.equal(p.via, "PCP");
  // On a router that speaks both, the UPnP one is the same rule: closing it now would close PCP's.
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(closed.length, 0, "nothing closed while held");
  await p.stop();
  assert.deepEqual([...closed].sort(), ["PCP", "UPnP"], "both closed on stop");

  // UPnP first this time; PCP, still asking when stop() comes, is closed as soon as it opens.
  closed.length = 0;
  const q = await openPinhole("2001:db8:1::10", 10042, {
    router: "2001:db8:1::1",
    timeoutMs: 3000,
    leaseMs: 600_000,
    log: () => {},
    map: opensAfter<PcpMapping>(80, {
      externalHost: "2001:db8:1::10",
      externalPort: 10042,
      lifetime: 600,
      stop: () => Promise.resolve(void closed.push("PCP")),
    }),
    upnp: opensAfter(10, {
      router: "2001:db8:1::1",
      lifetime: 600,
      stop: () => Promise.resolve(void closed.push("UPnP")),
    }),
  });
  assert.deepEqual([q.via, q.router, q.address, q.port], ["UPnP", "2001:db8:1::1", "2001:db8:1::10", 10042]);
  await q.stop();
  assert.deepEqual([...closed].sort(), ["PCP", "UPnP"]);

  // One way fails: the other's alone.
  const r = await openPinhole("2001:db8:1::10", 10042, {
    router: "2001:db8:1::1",
    timeoutMs: 3000,
    leaseMs: 600_000,
    log: () => {},
    map: failsAfter(5, new PcpError("PCP_TIMEOUT", "no answer")),
    upnp: opensAfter(20, { router: "2001:db8:1::1", lifetime: 600, stop: () => Promise.resolve() }),
  });
  assert.equal(r.via, "UPnP");
  await r.stop();
});

Deno.test("pinhole: when neither way opens one, each says why", async () => {
  await assert.rejects(
    openPinhole("2001:db8:1::10", 10042, {
      router: "2001:db8:1::1",
      timeoutMs: 3000,
      leaseMs: 600_000,
      log: () => {},
      map: failsAfter(5, new PcpError("PCP_TIMEOUT", "no answer within 3000 ms")),
      upnp: failsAfter(5, new UpnpError("UPNP_NO_SERVICE", "no router with WANIPv6FirewallControl answered")),
    }),
    (e) =>
      e instanceof PinholeError && e.code === "NO_PINHOLE" &&
      e.message === "PCP: no answer; UPnP: no router with WANIPv6FirewallControl answered",
  );
});
