/**
 * Behind a TCP load balancer (HAProxy in TCP mode with send-proxy) every connection comes from the balancer;
 * with --proxy-protocol the node reads the PROXY v1 line first, so per-source limits count real clients, TLS
 * (and client certificates) still go end to end, and a connection without the line is closed.
 */
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { parseProxyV1, proxyLineEnd, ProxyProtocolError } from "../server/proxy_protocol.ts";
import { enrollRaw, startTestDirectory } from "./helpers/directory.ts";

Deno.test("parseProxyV1: TCP4, TCP6 and UNKNOWN; anything else is refused", () => {
  assert.deepEqual(parseProxyV1("PROXY TCP4 203.0.113.9 10.0.0.1 51000 443"), {
    address: "203.0.113.9",
    port: 51000,
  });
  assert.deepEqual(parseProxyV1("PROXY TCP6 2001:db8::1 2001:db8::2 1 443"), {
    address: "2001:db8::1",
    port: 1,
  });
  assert.equal(parseProxyV1("PROXY UNKNOWN"), null);
  for (
    const bad of [
      "GET / HTTP/1.1",
      "PROXY TCP4 203.0.113.9 10.0.0.1 51000",
      "PROXY TCP4 2001:db8::1 10.0.0.1 1 2",
      "PROXY TCP6 203.0.113.9 2001:db8::2 1 2",
      "PROXY TCP4 203.0.113.9 10.0.0.1 65536 443",
      "PROXY TCP4 203.0.113.9 10.0.0.1 0443 443",
      "PROXY UDP4 203.0.113.9 10.0.0.1 1 2",
      "PROXY TCP4  203.0.113.9 10.0.0.1 1 2",
    ]
  ) {
    assert.throws(() => parseProxyV1(bad), ProxyProtocolError, bad);
  }
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.equal(proxyLineEnd(enc("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n\x16\x03")), 30);
  assert.equal(proxyLineEnd(enc("PROX")), -1);
  assert.throws(() => proxyLineEnd(enc("\x16\x03\x01")), ProxyProtocolError);
  assert.throws(() => proxyLineEnd(enc("PROXY " + "1".repeat(120))), ProxyProtocolError);
});

/** One HTTPS request through a raw TCP connection that first sends `line` (as a balancer would). */
function viaBalancer(
  port: number,
  caPem: string,
  line: string | null,
  path: string,
): Promise<number | "closed"> {
  return new Promise((resolve) => {
    const raw = net.connect(port, "127.0.0.1", () => {
      if (line !== null) raw.write(line);
      const t = tls.connect({ socket: raw, ca: caPem, servername: "localhost" }, () => {
        t.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      });
      let out = "";
      t.setEncoding("utf8");
      t.on("data", (d: string) => (out += d));
      t.on("error", () => {/* reported as "closed" */});
      t.on("close", () => {
        const m = /^HTTP\/1\.1 (\d{3})/.exec(out);
        resolve(m ? Number(m[1]) : "closed");
      });
    });
    raw.on("error", () => resolve("closed"));
  });
}

Deno.test("--proxy-protocol: limits count the clients named by the balancer; no line, no service", async () => {
  const t = await startTestDirectory({ proxyProtocol: true, limits: { ratePerSecond: 0.001, rateBurst: 2 } });
  try {
    const { port, caCertPem } = t.dir;
    const line = (ip: string) => `PROXY TCP4 ${ip} 127.0.0.1 40000 ${port}\r\n`;
    // One client's burst of 2 is spent; another client behind the same balancer is unaffected.
    assert.equal(await viaBalancer(port, caCertPem, line("203.0.113.1"), "/v1/info"), 200);
    assert.equal(await viaBalancer(port, caCertPem, line("203.0.113.1"), "/v1/info"), 200);
    assert.equal(await viaBalancer(port, caCertPem, line("203.0.113.1"), "/v1/info"), 429);
    assert.equal(await viaBalancer(port, caCertPem, line("203.0.113.2"), "/v1/info"), 200);
    // Without the line (a client that reached the node directly), or with a bad one: closed.
    assert.equal(await viaBalancer(port, caCertPem, null, "/v1/info"), "closed");
    assert.equal(await viaBalancer(port, caCertPem, "PROXY TCP4 nonsense\r\n", "/v1/info"), "closed");
  } finally {
    await t.close();
  }
});

Deno.test("--proxy-protocol: client certificates still reach the node through the balancer", async () => {
  const t = await startTestDirectory({ proxyProtocol: true });
  try {
    // The balancer is modelled by an in-process TCP relay that prepends the PROXY line.
    const conns = new Set<net.Socket>();
    const relay = net.createServer((c) => {
      conns.add(c);
      c.on("close", () => conns.delete(c));
      const up = net.connect(t.dir.port, "127.0.0.1", () => {
        up.write(`PROXY TCP4 198.51.100.20 127.0.0.1 ${c.remotePort} ${t.dir.port}\r\n`);
        c.pipe(up);
        up.pipe(c);
      });
      up.on("error", () => c.destroy());
      c.on("error", () => up.destroy());
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", () => r()));
    try {
      const url = `https://127.0.0.1:${(relay.address() as net.AddressInfo).port}`;
      const front = { url, caCertPem: t.dir.caCertPem };
      const alice = await enrollRaw(front, "alice");
      const client = Deno.createHttpClient({
        caCerts: [t.dir.caCertPem],
        cert: alice.certPem,
        key: alice.keyPem,
      });
      try {
        const init: RequestInit & { client: Deno.HttpClient } = { client };
        const me = await fetch(`${url}/v1/me`, init);
        assert.equal(me.status, 200);
        assert.equal((await me.json()).name, "alice");
      } finally {
        client.close();
      }
    } finally {
      for (const c of conns) c.destroy();
      await new Promise<void>((r) => relay.close(() => r()));
    }
  } finally {
    await t.close();
  }
});
