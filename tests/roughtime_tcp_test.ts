/**
 * Roughtime over TCP (RFC 10049 framing): our client and server interoperate for both IETF versions,
 * several requests on one connection are answered in order, a stream that is not Roughtime framing is cut
 * off, and the server keeps serving afterwards. Unpadded requests are answered over TCP (the 1,024-byte
 * minimum is a UDP rule) and still dropped over UDP.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import net from "node:net";
import {
  parseServerSpec,
  queryServer,
  RoughtimeError,
  type ServerSpec,
  startRoughtimeServer,
  verifyReply,
} from "../clock/mod.ts";
import { randomBytes } from "../clock/roughtime/crypto.ts";
import { codeOf } from "../coded_error.ts";
import { buildRequest } from "../clock/roughtime/request.ts";
import { takePackets } from "../clock/roughtime/tcp.ts";
import { concat } from "../clock/roughtime/wire.ts";
import { toB64, unpaddedRequest } from "./helpers/roughtime.ts";

/** Writes `data` on a fresh connection and collects what comes back until the server closes or `enough`. */
function talk(
  port: number,
  data: Uint8Array,
  enough: (bytes: Uint8Array) => boolean,
): Promise<{ bytes: Uint8Array; closed: boolean }> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let bytes: Uint8Array = new Uint8Array(0);
    const done = (closed: boolean) => {
      sock.destroy();
      resolve({ bytes, closed });
    };
    sock.on("connect", () => sock.write(data));
    sock.on("data", (c: Uint8Array) => {
      bytes = concat(bytes, new Uint8Array(c));
      if (enough(bytes)) done(false);
    });
    sock.on("close", () => done(true));
    sock.on("error", () => {});
  });
}

Deno.test("tcp: our client and server speak RFC 10049 framing for both IETF versions", async () => {
  const server = await startRoughtimeServer({ longTermSeed: randomBytes(32), port: 0, tcp: true });
  try {
    for (const version of ["rfc", "draft"] as const) {
      const spec = parseServerSpec(`127.0.0.1:${server.port}:${toB64(server.publicKey)}:${version}:tcp`);
      assert.equal(spec.transport, "tcp");
      const r = await queryServer(spec, { timeoutMs: 2000 });
      assert.equal(r.reply.version, version);
    }
    const google: ServerSpec = {
      name: "g",
      host: "127.0.0.1",
      port: server.port,
      publicKey: server.publicKey,
      version: "google",
      transport: "tcp",
    };
    await assert.rejects(
      queryServer(google),
      (e: unknown) => e instanceof RoughtimeError && e.code === "BAD_ARGUMENT",
    );
    assert.throws(() => parseServerSpec(`127.0.0.1:1:${toB64(server.publicKey)}:google:tcp`), RoughtimeError);
  } finally {
    await server.close();
  }
});

Deno.test("tcp: several requests on one connection are answered in order; bad framing closes the connection", async () => {
  const server = await startRoughtimeServer({ longTermSeed: randomBytes(32), port: 0, tcp: true });
  try {
    const reqs = [0, 1, 2].map(() => buildRequest({ serverPublicKey: server.publicKey }));
    // Sent in one write, split arbitrarily by TCP: the framing reassembles them.
    const { bytes: all } = await talk(
      server.port,
      concat(...reqs.map((r) => r.packet)),
      (b) => (takePackets(b)?.packets.length ?? 0) >= 3,
    );
    const split = takePackets(all);
    assert.ok(split);
    assert.equal(split.packets.length, 3);
    split.packets.forEach((p, i) => verifyReply(reqs[i].packet, p, server.publicKey));
    for (
      const junk of [
        randomBytes(64),
        new Uint8Array(20),
        concat(new TextEncoder().encode("ROUGHTIM"), new Uint8Array([0xff, 0xff, 0, 0])),
      ]
    ) {
      const r = await talk(server.port, junk, (b) => b.length > 0);
      assert.equal(r.closed, true);
      assert.equal(r.bytes.length, 0);
    }
    const spec: ServerSpec = {
      name: "t",
      host: "127.0.0.1",
      port: server.port,
      publicKey: server.publicKey,
      transport: "tcp",
    };
    assert.equal((await queryServer(spec, { timeoutMs: 2000 })).reply.version, "rfc");
    // UDP on the same port still works.
    assert.equal(
      (await queryServer({ ...spec, transport: "udp" }, { timeoutMs: 2000 })).reply.version,
      "rfc",
    );
  } finally {
    await server.close();
  }
});

Deno.test("tcp: a closed port fails fast with UNREACHABLE", async () => {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const spec: ServerSpec = {
    name: "t",
    host: "127.0.0.1",
    port,
    publicKey: randomBytes(32),
    transport: "tcp",
  };
  await assert.rejects(
    queryServer(spec, { timeoutMs: 2000 }),
    (e: unknown) => e instanceof RoughtimeError && e.code === "UNREACHABLE",
  );
});

Deno.test("tcp: an unpadded 116-byte request is answered over TCP, and the same bytes over UDP are dropped", async () => {
  const server = await startRoughtimeServer({ longTermSeed: randomBytes(32), port: 0, tcp: true });
  const udp = dgram.createSocket("udp4");
  try {
    const small = unpaddedRequest(server.publicKey);
    assert.equal(small.packet.length, 116);
    const { bytes } = await talk(
      server.port,
      small.packet,
      (b) => (takePackets(b)?.packets.length ?? 0) >= 1,
    );
    const reply = takePackets(bytes)!.packets[0];
    assert.ok(reply.length > small.packet.length);
    assert.equal(verifyReply(small.packet, reply, server.publicKey, { transport: "tcp" }).version, "rfc");
    // Our client still refuses such a reply by UDP rules: over UDP it would be an amplification.
    assert.throws(
      () => verifyReply(small.packet, reply, server.publicKey),
      (e: unknown) => e instanceof RoughtimeError && e.code === "RESPONSE_TOO_LARGE",
    );

    // UDP: the small request, then a padded one. Datagrams on loopback are handled in order, so a reply to the
    // small one would arrive before the padded one's.
    const padded = buildRequest({ serverPublicKey: server.publicKey });
    const replies: Uint8Array[] = [];
    const got = new Promise<void>((resolve) => {
      udp.on("message", (m: Uint8Array) => {
        replies.push(new Uint8Array(m));
        if (replies.some((r) => verifiesFor(padded.packet, r, server.publicKey))) resolve();
      });
    });
    await new Promise<void>((r) => udp.bind(0, "127.0.0.1", () => r()));
    const before = server.stats().dropped;
    udp.send(small.packet, server.port, "127.0.0.1");
    udp.send(padded.packet, server.port, "127.0.0.1");
    await got;
    assert.equal(replies.length, 1, "only the padded request got a reply over UDP");
    assert.equal(server.stats().dropped, before + 1);
  } finally {
    udp.close();
    await server.close();
  }
});

function verifiesFor(request: Uint8Array, reply: Uint8Array, key: Uint8Array): boolean {
  try {
    verifyReply(request, reply, key);
    return true;
  } catch {
    return false;
  }
}

Deno.test("tcp: a fixed port whose TCP number is taken fails with EADDRINUSE and releases its UDP socket", async () => {
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, "127.0.0.1", () => r()));
  const port = (holder.address() as net.AddressInfo).port;
  try {
    await assert.rejects(
      startRoughtimeServer({ longTermSeed: randomBytes(32), port, tcp: true }),
      (e: unknown) => codeOf(e) === "EADDRINUSE",
    );
    // The UDP socket it had bound is closed again: the same port can be taken now.
    const udp = dgram.createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind(port, "127.0.0.1", () => resolve());
    });
    await new Promise<void>((r) => udp.close(() => r()));
  } finally {
    await new Promise<void>((r) => holder.close(() => r()));
  }
});
