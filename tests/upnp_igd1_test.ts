/**
 * The UPnP-IGD version 1 client (client/upnp_igd1.ts) without a network lab: the device description walk,
 * the SOAP envelope and answers, and AddPortMapping's two version 1 refusals (725 permanent leases only,
 * 718 port held by another host) against a router's SOAP endpoint on loopback. The search and a real
 * forwarding rule are tested in network namespaces (tests/reach_mapping_test.ts).
 */
import assert from "node:assert/strict";
import {
  addMapping,
  CONFLICT_RETRIES,
  deleteMapping,
  type Igd1Service,
  IGD_1,
  IGD_2,
  MAX_ANSWER_BYTES,
  nextPortToTry,
  parseSoapAnswer,
  serviceOf,
  soapRequest,
  UpnpError,
} from "../client/upnp_igd1.ts";

const LOC = new URL("http://192.168.1.1:5000/rootDesc.xml");
const WAN_IP_1 = "urn:schemas-upnp-org:service:WANIPConnection:1";
const WAN_PPP_1 = "urn:schemas-upnp-org:service:WANPPPConnection:1";

/** A description as xml2js gives it (explicitArray false): one child is an object, several an array. */
function description(
  deviceType: string,
  services: { serviceType: string; controlURL: string }[],
  urlBase?: string,
) {
  return {
    ...(urlBase ? { URLBase: urlBase } : {}),
    device: {
      deviceType,
      serviceList: {
        service: { serviceType: "urn:schemas-upnp-org:service:Layer3Forwarding:1", controlURL: "/l3" },
      },
      deviceList: {
        device: {
          deviceType: "urn:schemas-upnp-org:device:WANDevice:1",
          deviceList: {
            device: {
              deviceType: "urn:schemas-upnp-org:device:WANConnectionDevice:1",
              serviceList: { service: services.length === 1 ? services[0] : services },
            },
          },
        },
      },
    },
  };
}

Deno.test("UPnP-IGD v1: the WAN connection service is found in the nested devices, WANIPConnection first", () => {
  const svc = serviceOf(
    LOC,
    description(IGD_1, [{ serviceType: WAN_PPP_1, controlURL: "/ctl/PPP" }, {
      serviceType: WAN_IP_1,
      controlURL: "/ctl/IP",
    }]),
  );
  assert.ok(svc);
  assert.equal(svc.serviceType, WAN_IP_1);
  assert.equal(svc.controlUrl.href, "http://192.168.1.1:5000/ctl/IP");
  assert.equal(svc.host, "192.168.1.1");
  assert.equal(svc.port, 5000);
  // A PPPoE router offers only WANPPPConnection.
  const ppp = serviceOf(LOC, description(IGD_1, [{ serviceType: WAN_PPP_1, controlURL: "/ctl/PPP" }]));
  assert.equal(ppp?.serviceType, WAN_PPP_1);
  // URLBase, when given, is what relative control URLs are read against.
  const based = serviceOf(
    LOC,
    description(IGD_1, [{ serviceType: WAN_IP_1, controlURL: "ctl" }], "http://192.168.1.1:49152/dev/"),
  );
  assert.equal(based?.controlUrl.href, "http://192.168.1.1:49152/dev/ctl");
});

Deno.test("UPnP-IGD v1: a v2 device, one without a WAN connection service, or a control URL elsewhere is not used", () => {
  // A version 2 router answers version 1 searches too; the version 2 path maps on it.
  assert.equal(serviceOf(LOC, description(IGD_2, [{ serviceType: WAN_IP_1, controlURL: "/ctl" }])), null);
  assert.equal(serviceOf(LOC, description(IGD_1, [])), null);
  assert.equal(serviceOf(LOC, {}), null);
  // The SOAP actions go to the router that answered the search, never to another host its description names
  // (which would make us POST our address and port to any host a forged answer chose), nor over https.
  for (const controlURL of ["http://203.0.113.9/ctl", "https://192.168.1.1/ctl", "file:///etc/passwd"]) {
    assert.equal(
      serviceOf(LOC, description(IGD_1, [{ serviceType: WAN_IP_1, controlURL }])),
      null,
      controlURL,
    );
  }
});

Deno.test("UPnP-IGD v1: the SOAP envelope names the action in the service's namespace and escapes the values", () => {
  const xml = soapRequest(WAN_IP_1, "AddPortMapping", [["NewExternalPort", 41234], [
    "NewPortMappingDescription",
    `a<b>&"c'`,
  ]]);
  assert.match(xml, /<u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">/);
  assert.match(xml, /<NewExternalPort>41234<\/NewExternalPort>/);
  assert.match(xml, /<NewPortMappingDescription>a&lt;b&gt;&amp;&quot;c&apos;<\/NewPortMappingDescription>/);
});

const envelope = (body: string) =>
  `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>${body}</s:Body></s:Envelope>`;
const faultXml = (code: number, text: string) =>
  envelope(
    `<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>${code}</errorCode><errorDescription>${text}</errorDescription></UPnPError></detail></s:Fault>`,
  );

Deno.test("UPnP-IGD v1: answers are read as fields, faults as the router's code, anything else as a bad answer", async () => {
  const okXml = envelope(
    `<u:GetExternalIPAddressResponse xmlns:u="${WAN_IP_1}"><NewExternalIPAddress>198.51.100.7</NewExternalIPAddress></u:GetExternalIPAddressResponse>`,
  );
  assert.deepEqual(await parseSoapAnswer("GetExternalIPAddress", 200, okXml), {
    "$": { "xmlns:u": WAN_IP_1 },
    NewExternalIPAddress: "198.51.100.7",
  });
  await assert.rejects(
    parseSoapAnswer("AddPortMapping", 500, faultXml(718, "ConflictInMappingEntry")),
    (e: unknown) =>
      e instanceof UpnpError && e.code === "UPNP_FAULT" && e.upnpCode === 718 && /718/.test(e.message),
  );
  await assert.rejects(
    parseSoapAnswer("AddPortMapping", 200, "<html>login</html"),
    (e: unknown) => e instanceof UpnpError && e.code === "UPNP_BAD_ANSWER" && e.upnpCode === null,
  );
  await assert.rejects(
    parseSoapAnswer("AddPortMapping", 200, envelope("<u:SomethingElse/>")),
    (e: unknown) => e instanceof UpnpError && e.code === "UPNP_BAD_ANSWER",
  );
  await assert.rejects(
    parseSoapAnswer("AddPortMapping", 404, envelope("<u:AddPortMappingResponse/>")),
    (e: unknown) => e instanceof UpnpError && /HTTP 404/.test(e.message),
  );
});

Deno.test("UPnP-IGD v1: another public port to try is random, above 1023, and not one tried", () => {
  const tried = new Set([41234]);
  let i = 0;
  // The first draw lands on a tried port, the second not.
  const draws = [(41234 - 1024) / (65536 - 1024), 0.5];
  const p = nextPortToTry(tried, () => draws[i++]);
  assert.equal(p, 1024 + Math.floor(0.5 * (65536 - 1024)));
  for (let k = 0; k < 200; k++) {
    const q = nextPortToTry(tried);
    assert.ok(q >= 1024 && q <= 65535 && q !== 41234, String(q));
  }
});

/** A router's SOAP endpoint on loopback: answers AddPortMapping by `rule`, records every action. */
function router(rule: (ext: number, lease: number) => number | null) {
  const asked: { action: string; ext: number; lease: number }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const action = /#(\w+)"$/.exec(req.headers.get("soapaction") ?? "")?.[1] ?? "";
    const body = await req.text();
    const num = (n: string) => Number(new RegExp(`<${n}>(\\d+)</${n}>`).exec(body)?.[1] ?? NaN);
    asked.push({ action, ext: num("NewExternalPort"), lease: num("NewLeaseDuration") });
    const xml = (status: number, b: string) =>
      new Response(b, { status, headers: { "content-type": "text/xml" } });
    if (action === "AddPortMapping") {
      const code = rule(num("NewExternalPort"), num("NewLeaseDuration"));
      return code === null
        ? xml(200, envelope(`<u:AddPortMappingResponse xmlns:u="${WAN_IP_1}"/>`))
        : xml(500, faultXml(code, "refused"));
    }
    if (action === "GetExternalIPAddress") {
      return xml(
        200,
        envelope(
          `<u:GetExternalIPAddressResponse xmlns:u="${WAN_IP_1}"><NewExternalIPAddress>198.51.100.7</NewExternalIPAddress></u:GetExternalIPAddressResponse>`,
        ),
      );
    }
    if (action === "DeletePortMapping") {
      return xml(200, envelope(`<u:DeletePortMappingResponse xmlns:u="${WAN_IP_1}"/>`));
    }
    return xml(500, faultXml(401, "Invalid Action"));
  });
  const port = (server.addr as Deno.NetAddr).port;
  const svc: Igd1Service = {
    host: "127.0.0.1",
    port,
    serviceType: WAN_IP_1,
    controlUrl: new URL(`http://127.0.0.1:${port}/ctl`),
  };
  return { svc, asked, close: () => server.shutdown() };
}

const ASK = {
  port: 41234,
  local: "192.168.1.10",
  externalPort: 41234,
  leaseS: 1200,
  description: "securechat",
};

Deno.test("UPnP-IGD v1: a router that grants only permanent leases (725) is asked again with lease 0", async () => {
  const r = await router((_ext, lease) => lease === 0 ? null : 725);
  try {
    const m = await addMapping(r.svc, ASK, AbortSignal.timeout(5000));
    assert.deepEqual(m, { externalHost: "198.51.100.7", externalPort: 41234, leaseS: 0 });
    assert.deepEqual(r.asked.map((a) => [a.action, a.lease]), [
      ["AddPortMapping", 1200],
      ["AddPortMapping", 0],
      ["GetExternalIPAddress", NaN],
    ]);
  } finally {
    await r.close();
  }
});

Deno.test("UPnP-IGD v1: a public port another host holds (718) makes it ask for others, a bounded number of times", async () => {
  // Our port is held; the next one asked for is free.
  const held = await router((ext) => ext === 41234 ? 718 : null);
  try {
    const m = await addMapping(held.svc, ASK, AbortSignal.timeout(5000), () => 0.25);
    const other = 1024 + Math.floor(0.25 * (65536 - 1024));
    assert.equal(m.externalPort, other);
    assert.equal(m.leaseS, 1200);
    assert.deepEqual(held.asked.filter((a) => a.action === "AddPortMapping").map((a) => a.ext), [
      41234,
      other,
    ]);
  } finally {
    await held.close();
  }
  // Every port held: it gives up after CONFLICT_RETRIES more, with the router's refusal.
  const full = await router(() => 718);
  try {
    await assert.rejects(
      addMapping(full.svc, ASK, AbortSignal.timeout(5000)),
      (e: unknown) => e instanceof UpnpError && e.upnpCode === 718,
    );
    assert.equal(full.asked.filter((a) => a.action === "AddPortMapping").length, 1 + CONFLICT_RETRIES);
    assert.equal(full.asked.some((a) => a.action === "GetExternalIPAddress"), false);
  } finally {
    await full.close();
  }
});

Deno.test("UPnP-IGD v1: another refusal is not retried; DeletePortMapping names the public port and TCP", async () => {
  const r = await router(() => 606);
  try {
    await assert.rejects(
      addMapping(r.svc, ASK, AbortSignal.timeout(5000)),
      (e: unknown) => e instanceof UpnpError && e.upnpCode === 606,
    );
    assert.equal(r.asked.length, 1);
    await deleteMapping(r.svc, 20001, AbortSignal.timeout(5000));
    assert.deepEqual(r.asked[1], { action: "DeletePortMapping", ext: 20001, lease: NaN });
  } finally {
    await r.close();
  }
});

Deno.test("UPnP-IGD v1: a redirect is not followed and an oversized answer is not read", async () => {
  let elsewhere = 0;
  const other = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    elsewhere++;
    return new Response("", { status: 200 });
  });
  const big = "x".repeat(MAX_ANSWER_BYTES + 1);
  const r = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    if (new URL(req.url).pathname === "/redirect") {
      return Response.redirect(`http://127.0.0.1:${(other.addr as Deno.NetAddr).port}/ctl`, 307);
    }
    return new Response(big, { status: 200, headers: { "content-type": "text/xml" } });
  });
  const port = (r.addr as Deno.NetAddr).port;
  const svc = (path: string): Igd1Service => ({
    host: "127.0.0.1",
    port,
    serviceType: WAN_IP_1,
    controlUrl: new URL(`http://127.0.0.1:${port}${path}`),
  });
  try {
    await assert.rejects(
      addMapping(svc("/redirect"), ASK, AbortSignal.timeout(5000)),
      (e: unknown) => e instanceof UpnpError && e.code === "UPNP_BAD_ANSWER" && /redirected/.test(e.message),
    );
    assert.equal(elsewhere, 0, "the request never reached the host the redirect named");
    await assert.rejects(
      addMapping(svc("/big"), ASK, AbortSignal.timeout(5000)),
      (e: unknown) => e instanceof UpnpError && /over 65536 bytes/.test(e.message),
    );
  } finally {
    await r.shutdown();
    await other.shutdown();
  }
});
