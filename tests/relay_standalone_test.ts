/**
 * `securechat relay` on a machine of its own (here: the same loopback): the phonebook points users to it,
 * its certificate comes from `serve relay-cert` and is never taken for the directory's, relay-only users chat
 * through it, and it follows the phonebook's CRL (a revoked user's control connection is refused).
 */
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { join } from "node:path";
import {
  issueRelayCertificate,
  revokeUser,
  startDirectoryServer,
  startStandaloneRelay,
} from "../server/mod.ts";
import { enroll } from "../client/enroll.ts";
import { DirectoryClient } from "../client/directory_client.ts";
import { startClient, until } from "./helpers/chat.ts";

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** The first line a control connection gets from the relay. */
function firstNotice(port: number, certPem: string, keyPem: string, caPem: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, cert: certPem, key: keyPem, ca: [caPem] });
    let buf = "";
    s.on("data", (d: Uint8Array) => {
      buf += new TextDecoder().decode(d);
      if (buf.includes("\n")) {
        s.destroy();
        resolve(buf.slice(0, buf.indexOf("\n")));
      }
    });
    s.on("error", reject);
  });
}

Deno.test("standalone relay: pointed to by the phonebook, relays relay-only users, follows the CRL", async () => {
  const root = await Deno.makeTempDir({ prefix: "securechat-relay-" });
  const relayPort = await freePort();
  const pb = await startDirectoryServer({
    dataDir: join(root, "pb"),
    port: 0,
    roughtime: { hostname: "127.0.0.1", port: 0 },
    relayAt: { host: "127.0.0.1", port: relayPort },
    onError: () => {},
  });
  assert.equal(pb.relay, null, "no relay of its own");
  const files = await issueRelayCertificate(join(root, "pb"), ["127.0.0.1"], join(root, "relay"));
  assert.equal((await Deno.stat(files.keyPath)).mode! & 0o077, 0, "the key is the owner's only");
  const forwarded: Uint8Array[] = [];
  const relay = await startStandaloneRelay({
    certPem: await Deno.readTextFile(files.certPath),
    keyPem: await Deno.readTextFile(files.keyPath),
    caPem: await Deno.readTextFile(files.caPath),
    phonebook: pb.url,
    hostname: "127.0.0.1",
    port: relayPort,
    crlRefreshMs: 200,
    onForward: (c) => forwarded.push(new Uint8Array(c)),
  });
  const homes = [];
  try {
    for (const name of ["alice", "bob", "carol"]) {
      const home = await Deno.makeTempDir({ prefix: `securechat-${name}-` });
      homes.push(await enroll({ server: pb.url, caFingerprint: pb.caFingerprint, name, home }));
    }
    const [aliceHome, bobHome, carolHome] = homes;
    const dc = new DirectoryClient({ url: pb.url, caPem: aliceHome.caPem });
    assert.deepEqual(await dc.relayAddress(), { host: "127.0.0.1", port: relayPort });
    // The relay's certificate is from our CA and for this host, yet never accepted as the directory's.
    const fake = new DirectoryClient({ url: `https://127.0.0.1:${relayPort}`, caPem: aliceHome.caPem });
    await assert.rejects(fake.info(), (e: Error & { code?: string }) => e.code === "BAD_SERVER_CERTIFICATE");

    const alice = await startClient(aliceHome, { relayOnly: true });
    const bob = await startClient(bobHome, { relayOnly: true });
    try {
      const text = "through the standalone relay " + crypto.randomUUID();
      const m = await alice.engine.send("bob", text);
      await bob.log.waitFor("message", (e) => e.message.id === m.id);
      await alice.log.waitFor("delivered", (e) => e.id === m.id);
      assert.equal(alice.engine.peerInfo("bob")?.path, `relayed via 127.0.0.1:${relayPort}`);
      assert.ok(relay.stats().bytesForwarded > 1000);
      const all = Buffer.concat(forwarded);
      assert.equal(all.includes(Buffer.from(text)), false);
    } finally {
      await alice.stop();
      await bob.stop();
    }

    const ready = JSON.parse(
      await firstNotice(relayPort, carolHome.certPem, carolHome.keyPem, carolHome.caPem),
    );
    assert.deepEqual(ready, { t: "ready", name: "carol" });
    await revokeUser(join(root, "pb"), "carol");
    await until(
      async () => {
        const n = JSON.parse(
          await firstNotice(relayPort, carolHome.certPem, carolHome.keyPem, carolHome.caPem),
        );
        return n.t === "error" && n.code === "UNAUTHENTICATED";
      },
      10_000,
      "carol refused after the CRL refresh",
    );
  } finally {
    await relay.close();
    await pb.close();
    for (const h of homes) await Deno.remove(h.dir, { recursive: true });
    await Deno.remove(root, { recursive: true });
  }
});
