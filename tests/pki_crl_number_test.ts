/**
 * The CRL as RFC 5280 wants it from a conforming CA: a CRL Number extension (5.2.3, MUST), increasing with
 * every list the directory signs (also across a restart), so a client can tell a newer list from an older
 * one replayed to it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createCrl, verifyCrl, x509 } from "../pki/mod.ts";
import { revokeUser, startDirectoryServer } from "../server/mod.ts";
import { makeTestCa } from "./helpers/pki.ts";
import { enrollRaw } from "./helpers/directory.ts";
import { DirectoryClient } from "../client/directory_client.ts";

const OID_CRL_NUMBER = "2.5.29.20";

/** The CRL Number of a DER CRL (a DER INTEGER in the extension's value), or null when absent. */
function crlNumberOf(der: Uint8Array): bigint | null {
  const crl = new x509.X509Crl(new Uint8Array(der));
  const ext = crl.extensions.find((e) => e.type === OID_CRL_NUMBER);
  if (!ext) return null;
  assert.equal(ext.critical, false, "CRL Number is non-critical (RFC 5280 5.2.3)");
  const v = new Uint8Array(ext.value);
  assert.equal(v[0], 0x02, "an INTEGER");
  assert.equal(v[1], v.length - 2);
  assert.ok(v.length - 2 <= 20, "at most 20 octets");
  assert.ok((v[2] & 0x80) === 0, "non-negative");
  let n = 0n;
  for (const b of v.subarray(2)) n = (n << 8n) | BigInt(b);
  return n;
}

Deno.test("createCrl carries a CRL Number: the one given, else one that grows with time", async () => {
  const ca = await makeTestCa();
  const a = await createCrl(ca.material, [], 1_000_000);
  const b = await createCrl(ca.material, [], 2_000_000);
  assert.ok(crlNumberOf(new Uint8Array(a.rawData))! < crlNumberOf(new Uint8Array(b.rawData))!);
  for (const n of [0, 1, 127, 128, 255, 256, 2 ** 40]) {
    const c = await createCrl(ca.material, [], Date.now(), { crlNumber: n });
    assert.equal(crlNumberOf(new Uint8Array(c.rawData)), BigInt(n));
    const parsed = await verifyCrl(new Uint8Array(c.rawData), ca.certPem);
    assert.equal(parsed.crlNumber, BigInt(n));
  }
});

Deno.test("the directory's CRL Number increases with each list it signs, across a restart", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "securechat-crlnum-" });
  const data = join(tmp, "data");
  const opts = { dataDir: data, port: 0, roughtime: false as const };
  let dir = await startDirectoryServer(opts);
  try {
    const fetchNumber = async () => {
      const c = new DirectoryClient({ url: dir.url, caPem: dir.caCertPem });
      try {
        const parsed = await c.crl();
        assert.notEqual(parsed.crlNumber, undefined);
        return parsed.crlNumber!;
      } finally {
        c.close();
      }
    };
    const first = await fetchNumber();
    assert.equal(await fetchNumber(), first, "an unchanged list is served again, not re-numbered");
    await enrollRaw(dir, "alice");
    await revokeUser(data, "alice");
    const second = await fetchNumber();
    assert.ok(second > first, `${second} > ${first}`);
    await dir.close();
    dir = await startDirectoryServer(opts);
    const third = await fetchNumber();
    assert.ok(third > second, `after a restart: ${third} > ${second}`);
  } finally {
    await dir.close();
    await Deno.remove(tmp, { recursive: true });
  }
});
