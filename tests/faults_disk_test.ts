/** Disk full on the receiver: a clear error, no receipt (so nothing is lost), and recovery once space is back. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { enroll } from "../client/enroll.ts";
import { enrollUser, startClient, startPhonebook } from "./helpers/chat.ts";

function canMount(): boolean {
  try {
    if (Deno.uid() !== 0) return false;
    const dir = Deno.makeTempDirSync();
    const ok =
      new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir], stderr: "null" })
        .outputSync().success;
    if (ok) new Deno.Command("umount", { args: [dir] }).outputSync();
    Deno.removeSync(dir);
    return ok;
  } catch {
    return false;
  }
}

const ignore = !canMount();
if (ignore) console.warn("cannot mount a small tmpfs (needs root): disk-full test skipped");

Deno.test({
  name:
    "disk full at the receiver: STORE_FAILED, the message stays with the sender, delivered once space is back",
  ignore,
  fn: async () => {
    const mnt = await Deno.makeTempDir({ prefix: "securechat-full-" });
    const mount = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt] })
      .output();
    assert.ok(mount.success);
    const pb = await startPhonebook();
    const aliceHome = await enrollUser(pb, "alice");
    const bobHome = await enroll({
      server: pb.server.url,
      caFingerprint: pb.server.caFingerprint,
      name: "bob",
      home: join(mnt, "bob"),
    });
    const alice = await startClient(aliceHome);
    const bob = await startClient(bobHome);
    const filler = join(mnt, "filler");
    try {
      const m1 = await alice.engine.send("bob", "plenty of room");
      await alice.log.waitFor("delivered", (e) => e.id === m1.id);

      // Fill the disk.
      const f = await Deno.open(filler, { write: true, create: true });
      const block = new Uint8Array(64 * 1024);
      try {
        for (;;) await f.write(block);
      } catch {
        // ENOSPC: full
      } finally {
        f.close();
      }
      const m2 = await alice.engine.send("bob", `no room for this ${"z".repeat(8000)}`);
      const err = await bob.log.waitFor("error", (e) => e.code === "STORE_FAILED", 10_000);
      assert.match(err.message, /cannot store/);
      await new Promise((r) => setTimeout(r, 300));
      assert.notEqual(alice.engine.history("bob").find((m) => m.id === m2.id)?.state, "delivered");
      assert.equal(bob.log.of("message").some((e) => e.message.id === m2.id), false);

      // Space is back: the sender's retry gets it through, once.
      await Deno.remove(filler);
      await alice.log.waitFor("delivered", (e) => e.id === m2.id, 15_000);
      await bob.log.waitFor("message", (e) => e.message.id === m2.id);
      assert.equal(bob.engine.history("alice").filter((m) => m.id === m2.id).length, 1);
      assert.equal(bob.store((s) => s.integrityCheck()), "ok");
    } finally {
      await alice.stop();
      await bob.stop();
      await pb.close();
      await Deno.remove(aliceHome.dir, { recursive: true });
      await new Deno.Command("umount", { args: [mnt] }).output();
      await Deno.remove(mnt, { recursive: true });
    }
  },
});
