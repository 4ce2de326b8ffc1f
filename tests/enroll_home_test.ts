/** The home folder: where it is, what "enrolled" means, and refusals of broken or tampered folders. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { HomeError, isEnrolled, loadHome, resolveHomeDir, writeHome } from "../client/home.ts";
import { enroll, EnrollError } from "../client/enroll.ts";
import { DirectoryClient } from "../client/directory_client.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";
import { startTestDirectory } from "./helpers/directory.ts";

function withEnv(vars: Record<string, string | undefined>, fn: () => void): void {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = Deno.env.get(k);
    if (v === undefined) Deno.env.delete(k);
    else Deno.env.set(k, v);
  }
  try {
    fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) Deno.env.delete(k);
      else Deno.env.set(k, v);
    }
  }
}

Deno.test("resolveHomeDir: --home, then $SECURECHAT_HOME, then the platform's data folder", () => {
  withEnv({ SECURECHAT_HOME: "/from/env", XDG_DATA_HOME: "/xdg", HOME: "/home/u" }, () => {
    assert.equal(resolveHomeDir("/from/flag"), "/from/flag");
    assert.equal(resolveHomeDir(), "/from/env");
  });
  if (Deno.build.os === "linux") {
    withEnv({ SECURECHAT_HOME: undefined, XDG_DATA_HOME: "/xdg", HOME: "/home/u" }, () => {
      assert.equal(resolveHomeDir(), "/xdg/securechat");
    });
    withEnv({ SECURECHAT_HOME: undefined, XDG_DATA_HOME: undefined, HOME: "/home/u" }, () => {
      assert.equal(resolveHomeDir(), "/home/u/.local/share/securechat");
    });
  }
});

Deno.test("loadHome: not enrolled, tampered CA, and a complete folder", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-home-" });
  try {
    const home = join(tmp, "h");
    assert.equal(await isEnrolled(home), false);
    await assert.rejects(loadHome(home), (e: unknown) => e instanceof HomeError && e.code === "NOT_ENROLLED");
    const ca = await makeTestCa();
    const leaf = await makeTestLeaf(ca, "alice");
    const config = {
      server: "https://127.0.0.1:10040",
      name: "alice",
      caFingerprint: ca.fingerprint,
      roughtime: [{ name: "directory", host: "127.0.0.1", port: 2002, publicKey: btoa("k".repeat(32)) }],
    };
    await writeHome(home, { keyPem: leaf.keyPem, certPem: leaf.certPem, caPem: ca.certPem, config });
    assert.equal((await Deno.stat(join(home, "key.pem"))).mode! & 0o777, 0o600);
    const st = await loadHome(home);
    assert.equal(st.name, "alice");
    assert.equal(st.keyPem, leaf.keyPem);
    assert.deepEqual(st.roughtime[0].publicKey, new TextEncoder().encode("k".repeat(32)));
    // Another CA swapped in under the pinned fingerprint: refused.
    const other = await makeTestCa();
    await Deno.writeTextFile(join(home, "ca.pem"), other.certPem);
    await assert.rejects(loadHome(home), (e: unknown) => e instanceof HomeError && e.code === "BAD_HOME");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("enroll: Ed25519 keys work, and an enrolled home is never overwritten", async () => {
  const t = await startTestDirectory();
  try {
    const home = join(t.tmp, "ed");
    const st = await enroll({
      server: t.dir.url,
      caFingerprint: t.dir.caFingerprint,
      name: "edward",
      home,
      algorithm: "ed25519",
    });
    assert.match(st.keyPem, /BEGIN PRIVATE KEY/);
    const c = new DirectoryClient({
      url: t.dir.url,
      caPem: st.caPem,
      certPem: st.certPem,
      keyPem: st.keyPem,
    });
    try {
      await c.publish("127.0.0.1", 4000, 60); // mutual TLS with an Ed25519 client certificate
      assert.equal((await c.lookup("edward"))?.online, true);
    } finally {
      c.close();
    }
    const keyBefore = await Deno.readTextFile(join(home, "key.pem"));
    await assert.rejects(
      enroll({ server: t.dir.url, caFingerprint: t.dir.caFingerprint, name: "edward2", home }),
      (e: unknown) => e instanceof EnrollError && e.code === "ALREADY_ENROLLED",
    );
    assert.equal(await Deno.readTextFile(join(home, "key.pem")), keyBefore);
    // No fingerprint and no way to ask: refused before anything is generated or sent.
    await assert.rejects(
      enroll({ server: t.dir.url, name: "frank", home: join(t.tmp, "frank") }),
      (e: unknown) => e instanceof EnrollError && e.code === "NOT_CONFIRMED",
    );
    assert.equal(await isEnrolled(join(t.tmp, "frank")), false);
  } finally {
    await t.close();
  }
});
