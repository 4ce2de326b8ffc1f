/**
 * Secrets on disk: the CA key, the server's TLS key, the database and the user's key end up owner-only,
 * also when the file or its folder was already there with loose modes, and a secret is never written
 * through a file handle or a symbolic link somebody else prepared.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeSecretFile } from "../pki/mod.ts";
import { HomeError, loadHome, writeHome } from "../client/home.ts";
import { startDirectoryServer } from "../server/mod.ts";
import { makeTestCa, makeTestLeaf } from "./helpers/pki.ts";

const POSIX = Deno.build.os !== "windows";

async function modeOf(path: string): Promise<number> {
  return (await Deno.lstat(path)).mode! & 0o777;
}

Deno.test({
  name:
    "writeSecretFile: a reader of the old loose file never sees the secret; a planted symlink is replaced",
  ignore: !POSIX,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-secret-" });
    try {
      // Someone opened key.pem while it was world-readable and keeps the handle.
      const path = join(tmp, "key.pem");
      await Deno.writeTextFile(path, "old public junk\n", { mode: 0o644 });
      await Deno.chmod(path, 0o644);
      const spy = await Deno.open(path, { read: true });
      try {
        await writeSecretFile(path, "SECRET-KEY-MATERIAL\n");
        const buf = new Uint8Array(256);
        const n = await spy.read(buf);
        const seen = new TextDecoder().decode(buf.subarray(0, n ?? 0));
        assert.doesNotMatch(seen, /SECRET/, "the secret was written into a file others had open");
      } finally {
        spy.close();
      }
      assert.equal(await Deno.readTextFile(path), "SECRET-KEY-MATERIAL\n");
      assert.equal(await modeOf(path), 0o600);

      // A symlink planted where the key goes, pointing at a file its planter can read.
      const bait = join(tmp, "bait.txt");
      await Deno.writeTextFile(bait, "", { mode: 0o666 });
      await Deno.chmod(bait, 0o666);
      const link = join(tmp, "ca-key.pem");
      await Deno.symlink(bait, link);
      await writeSecretFile(link, "SECRET-2\n");
      assert.equal(await Deno.readTextFile(bait), "", "the secret followed the symlink");
      assert.equal(await modeOf(bait), 0o666);
      const st = await Deno.lstat(link);
      assert.ok(st.isFile && !st.isSymlink, "the key path is now a regular file");
      assert.equal(await modeOf(link), 0o600);
      // No temporary files left beside it.
      const names = [];
      for await (const e of Deno.readDir(tmp)) names.push(e.name);
      assert.deepEqual(names.sort(), ["bait.txt", "ca-key.pem", "key.pem"]);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name: "serve: a data folder and database that already exist with loose modes are made owner-only",
  ignore: !POSIX,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-modes-" });
    const data = join(tmp, "data");
    try {
      await Deno.mkdir(data, { mode: 0o755 });
      await Deno.chmod(data, 0o755);
      // An empty database file left by an earlier run with a permissive umask.
      await Deno.writeFile(join(data, "directory.db"), new Uint8Array(0), { mode: 0o644 });
      await Deno.chmod(join(data, "directory.db"), 0o644);
      const dir = await startDirectoryServer({
        dataDir: data,
        port: 0,
        roughtime: { hostname: "127.0.0.1", port: 0 },
      });
      try {
        assert.equal(await modeOf(data), 0o700, "data folder");
        for (const f of ["ca-key.pem", "server-key.pem", "roughtime-key.json", "directory.db"]) {
          assert.equal(await modeOf(join(data, f)), 0o600, f);
        }
        for await (const e of Deno.readDir(data)) {
          if (e.name.startsWith("directory.db-")) {
            assert.equal(await modeOf(join(data, e.name)), 0o600, e.name);
          }
        }
      } finally {
        await dir.close();
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name: "home: an existing home folder with loose modes is made owner-only; the key is 0600",
  ignore: !POSIX,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-home-modes-" });
    const home = join(tmp, "home");
    try {
      await Deno.mkdir(home, { mode: 0o755 });
      await Deno.chmod(home, 0o755);
      await Deno.writeTextFile(join(home, "key.pem"), "", { mode: 0o644 });
      await Deno.chmod(join(home, "key.pem"), 0o644);
      const ca = await makeTestCa();
      const leaf = await makeTestLeaf(ca, "alice");
      await writeHome(home, {
        keyPem: leaf.keyPem,
        certPem: leaf.certPem,
        caPem: ca.certPem,
        config: {
          server: "https://localhost:1",
          name: "alice",
          caFingerprint: ca.fingerprint,
          roughtime: [],
        },
      });
      assert.equal(await modeOf(home), 0o700, "home folder");
      assert.equal(await modeOf(join(home, "key.pem")), 0o600, "key.pem");
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name: "loadHome refuses a key.pem that others can read (like ssh), and names the fix",
  ignore: !POSIX,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "securechat-home-key-" });
    const home = join(tmp, "home");
    try {
      const ca = await makeTestCa();
      const leaf = await makeTestLeaf(ca, "alice");
      await writeHome(home, {
        keyPem: leaf.keyPem,
        certPem: leaf.certPem,
        caPem: ca.certPem,
        config: {
          server: "https://localhost:1",
          name: "alice",
          caFingerprint: ca.fingerprint,
          roughtime: [],
        },
      });
      assert.equal((await loadHome(home)).name, "alice");
      for (const mode of [0o644, 0o640, 0o604]) {
        await Deno.chmod(join(home, "key.pem"), mode);
        await assert.rejects(
          loadHome(home),
          (e: unknown) => e instanceof HomeError && e.code === "BAD_HOME" && /chmod 600/.test(e.message),
          mode.toString(8),
        );
      }
      await Deno.chmod(join(home, "key.pem"), 0o600);
      assert.equal((await loadHome(home)).name, "alice");
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
