/**
 * Issue 11, finding 5: a scan of a user's listener read its certificate ("Subject: bob"). Now a connection
 * must knock first (contract/knock.ts); without a valid knock the listener closes it without sending one
 * byte. Real sockets: `openssl s_client` against the listener, a raw TLS client with no knock, with a knock
 * made with another secret, an old one and a replayed one, each through a counting relay that proves the
 * listener sent nothing and closed the connection; then a peer with the right secret gets the certificate.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { rawDial, startTestListener } from "./helpers/chat.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";
import { useTool } from "./helpers/tools.ts";
import { KNOCK_SLOT_MS, KNOCK_SLOT_SKEW, makeKnock, newKnockSecret } from "../contract/mod.ts";

/** A TCP relay in front of `port` that counts, per connection, the bytes the listener sent back and whether
 * the listener closed its side. */
async function countingRelay(port: number) {
  const legs: { fromListener: number; listenerClosed: Promise<void> }[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on("error", () => {});
    const up = net.connect({ host: "127.0.0.1", port });
    sockets.add(up);
    up.on("error", () => {});
    const leg = {
      fromListener: 0,
      listenerClosed: new Promise<void>((r) => up.once("close", () => r())),
    };
    legs.push(leg);
    up.on("data", (b: Uint8Array) => {
      leg.fromListener += b.length;
      client.write(b);
    });
    client.on("data", (b: Uint8Array) => up.write(b));
    up.once("close", () => client.destroy());
    client.once("close", () => up.end());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    last: () => legs[legs.length - 1],
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

Deno.test("scan: openssl s_client gets no certificate and no byte, and the connection is closed", async () => {
  if (!useTool("openssl", "the openssl scan of a listener")) return;
  const ca = await makeTestCa();
  const bob = await makeTestLeaf(ca, "bob");
  const l = await startTestListener(ca, bob);
  const relay = await countingRelay(l.address.port);
  try {
    for (const port of [l.address.port, relay.port]) {
      const child = new Deno.Command("openssl", {
        args: ["s_client", "-connect", `127.0.0.1:${port}`, "-showcerts"],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      // Bounded: a listener that held the connection open would leave s_client waiting.
      const kill = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const out = await child.output();
      clearTimeout(kill);
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.notEqual(out.signal, "SIGKILL", "s_client returned: the listener closed the connection");
      assert.doesNotMatch(text, /BEGIN CERTIFICATE|Subject|subject=|bob|Certificate chain/, text);
      assert.match(text, /no peer certificate available/, text);
      assert.match(text, /handshake has read 0 bytes/, text);
    }
    assert.equal(relay.last().fromListener, 0, "the listener sent nothing");
    await relay.last().listenerClosed;
    assert.equal(l.sessions.stats.knockRefused, 2);
  } finally {
    await relay.close();
    await l.stop();
  }
});

Deno.test("scan: no knock, another secret, an old knock and a replayed one are closed unanswered", async () => {
  const ca = await makeTestCa();
  const bob = await makeTestLeaf(ca, "bob");
  const alice = await makeTestLeaf(ca, "alice");
  const l = await startTestListener(ca, bob);
  const relay = await countingRelay(l.address.port);
  const secret = l.sessions.knockSecret;
  try {
    // The right secret: the handshake completes and bob's certificate is what the knocker sees.
    const sniffed = makeKnock(secret);
    const good = await rawDial(l.address.port, alice, {}, { knockBytes: sniffed });
    assert.equal(good.socket.getPeerCertificate().subject?.CN, "bob");
    good.socket.destroy();

    const old = Date.now() - (KNOCK_SLOT_SKEW + 2) * KNOCK_SLOT_MS;
    const cases: [string, { knock?: Uint8Array | null; knockBytes?: Uint8Array }][] = [
      ["no knock (a plain TLS client)", { knock: null }],
      ["a knock made with another secret", { knock: newKnockSecret() }],
      ["a knock from minutes ago", { knockBytes: makeKnock(secret, old) }],
      ["a sniffed knock replayed", { knockBytes: sniffed }],
      ["random bytes of a knock's length", { knockBytes: crypto.getRandomValues(new Uint8Array(40)) }],
    ];
    for (const [what, opts] of cases) {
      const before = l.sessions.stats.knockRefused;
      await assert.rejects(rawDial(relay.port, alice, {}, opts), Error, `${what}: no TLS handshake`);
      await relay.last().listenerClosed;
      assert.equal(relay.last().fromListener, 0, `${what}: the listener sent nothing`);
      assert.equal(l.sessions.stats.knockRefused, before + 1, `${what}: counted`);
    }
    assert.equal(l.sessions.sessionCount(), 0, "none of them became a session");

    // And an honest peer with the secret still gets in after the scan.
    const again = await rawDial(relay.port, alice, {}, { knock: secret });
    assert.equal(again.socket.getPeerCertificate().subject?.CN, "bob");
    assert.ok(relay.last().fromListener > 0);
    again.socket.destroy();
  } finally {
    await relay.close();
    await l.stop();
  }
});
