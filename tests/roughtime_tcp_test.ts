/**
 * Roughtime over TCP (RFC 10049 framing): our client and server interoperate for both IETF versions,
 * several requests on one connection are answered in order, a stream that is not Roughtime framing is cut
 * off, and the server keeps serving afterwards.
 */
import assert from "node:assert/strict";
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
import { buildRequest } from "../clock/roughtime/request.ts";
import { takePackets } from "../clock/roughtime/tcp.ts";
import { concat } from "../clock/roughtime/wire.ts";
import { toB64 } from "./helpers/roughtime.ts";

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
