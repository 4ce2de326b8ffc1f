/**
 * Long-term keys (what the phonebook server calls): created 0600, loaded back identically, never
 * overwritten, refused when others can read them or when the file is damaged. Also the config.json form of
 * server entries.
 */
import assert from "node:assert/strict";
import {
  generateLongTermSeed,
  loadOrCreateLongTermKey,
  PUBLIC_SERVERS,
  publicKeyFromSeed,
  RoughtimeError,
  serverSpecFromJson,
  serverSpecToJson,
} from "../clock/mod.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function isCode(code: string) {
  return (e: unknown) => e instanceof RoughtimeError && e.code === code;
}

Deno.test("keys: a seed is 32 random bytes and determines the public key", () => {
  const a = generateLongTermSeed();
  const b = generateLongTermSeed();
  assert.equal(a.length, 32);
  assert.notDeepEqual(a, b);
  assert.deepEqual(publicKeyFromSeed(a), publicKeyFromSeed(a.slice()));
  assert.notDeepEqual(publicKeyFromSeed(a), publicKeyFromSeed(b));
  // RFC 8032 test vector 1: secret 9d61b1..., public d75a98...
  const seed = Uint8Array.from(
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60".match(/../g)!.map((h) =>
      parseInt(h, 16)
    ),
  );
  assert.equal(
    Array.from(publicKeyFromSeed(seed), (x) => x.toString(16).padStart(2, "0")).join(""),
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
  );
  assert.throws(() => publicKeyFromSeed(new Uint8Array(31)), isCode("BAD_ARGUMENT"));
});

Deno.test("keys: loadOrCreateLongTermKey creates a 0600 file once and loads the same key afterwards", () =>
  withDir(async (dir) => {
    const path = `${dir}/roughtime.key`;
    const first = await loadOrCreateLongTermKey(path);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.deepEqual(first.publicKey, publicKeyFromSeed(first.seed));
    const again = await loadOrCreateLongTermKey(path);
    assert.deepEqual(again.seed, first.seed);
    // Concurrent first calls agree on one key.
    const p2 = `${dir}/race.key`;
    const [x, y] = await Promise.all([loadOrCreateLongTermKey(p2), loadOrCreateLongTermKey(p2)]);
    assert.deepEqual(x.seed, y.seed);
  }));

Deno.test("keys: a key file readable by others, damaged, or with a mismatched public key is refused", () =>
  withDir(async (dir) => {
    const path = `${dir}/k`;
    const { seed } = await loadOrCreateLongTermKey(path);
    const text = await Deno.readTextFile(path);
    await Deno.chmod(path, 0o644);
    await assert.rejects(loadOrCreateLongTermKey(path), isCode("BAD_KEY_FILE"));
    await Deno.chmod(path, 0o600);
    const cases = [
      "not json",
      "{}",
      JSON.stringify({ ...JSON.parse(text), seed: "AAAA" }),
      JSON.stringify({ ...JSON.parse(text), seed: "***" }),
      JSON.stringify({ ...JSON.parse(text), publicKey: btoa(String.fromCharCode(...new Uint8Array(32))) }),
    ];
    for (const c of cases) {
      await Deno.writeTextFile(path, c);
      await assert.rejects(loadOrCreateLongTermKey(path), isCode("BAD_KEY_FILE"), c);
    }
    // The damaged file was not replaced by a new key.
    assert.equal(await Deno.readTextFile(path), cases[cases.length - 1]);
    assert.equal(seed.length, 32);
  }));

Deno.test("server entries: config.json form round-trips and bad entries are refused", () => {
  for (const s of PUBLIC_SERVERS) {
    assert.equal(s.publicKey.length, 32);
    assert.deepEqual(serverSpecFromJson(serverSpecToJson(s)), s);
  }
  const e = {
    name: "pb",
    host: "127.0.0.1",
    port: 2002,
    publicKey: serverSpecToJson(PUBLIC_SERVERS[0]).publicKey,
    version: "google",
  };
  assert.equal(serverSpecFromJson(e).version, "google");
  for (
    const bad of [null, [], { ...e, port: 0 }, { ...e, port: "2002" }, { ...e, host: "" }, {
      ...e,
      publicKey: "AAAA",
    }, { ...e, version: "v9" }]
  ) {
    assert.throws(() => serverSpecFromJson(bad), isCode("BAD_SERVER_SPEC"));
  }
});
