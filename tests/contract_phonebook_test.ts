/** The phonebook's JSON contract: each decoder takes what the server sends (and fields it does not know),
 * and refuses every malformed shape with ContractError BAD_RESPONSE. */
import assert from "node:assert/strict";
import {
  ContractError,
  decodeDirectoryInfo,
  decodeErrorBody,
  decodeIssuedCertificate,
  decodeRevokeAnswer,
  decodeUserEntry,
  decodeUserList,
} from "../contract/mod.ts";

const entry = {
  name: "bob",
  online: true,
  address: { host: "192.0.2.1", port: 4000 },
  certPem: "-----BEGIN CERTIFICATE-----",
  fingerprint: "ab".repeat(32),
  revoked: false,
  notAfter: 1_800_000_000_000,
};

function refused(f: () => unknown) {
  assert.throws(f, (e: unknown) => e instanceof ContractError && e.code === "BAD_RESPONSE");
}

/** What an entry from a server before candidates decodes to: its address is the one candidate, no relay,
 * nothing checked. */
const decoded = {
  ...entry,
  candidates: [entry.address],
  reachable: [],
  reachCheckedAt: null,
  relay: null,
  knock: null,
};

Deno.test("contract: a user entry decodes, unknown fields are ignored, 'online' needs a usable address", () => {
  assert.deepEqual(decodeUserEntry({ ...entry, futureField: [1] }), decoded);
  for (
    const address of [null, { host: "", port: 4000 }, { host: "h", port: 0 }, { host: "h", port: 70000 }]
  ) {
    const d = decodeUserEntry({ ...entry, address });
    assert.equal(d.online, false);
    assert.equal(d.address, null);
    assert.deepEqual(d.candidates, []);
  }
  assert.equal(decodeUserEntry({ ...entry, notAfter: undefined }).notAfter, null, "older server");
  assert.equal(decodeUserEntry({ ...entry, revoked: "yes" }).revoked, false);
});

Deno.test("contract: a knock secret decodes only as base64url of exactly 32 bytes", () => {
  const good = "A".repeat(42) + "E"; // 32 bytes, canonical (the last character's low bits zero)
  assert.equal(decodeUserEntry({ ...entry, knock: good }).knock, good);
  for (
    const bad of [
      "A".repeat(42) + "B",
      "A".repeat(43) + "=",
      "A".repeat(44),
      "A".repeat(42),
      5,
      null,
      "+".repeat(43),
    ]
  ) {
    assert.equal(decodeUserEntry({ ...entry, knock: bad }).knock, null, `knock ${bad}`);
  }
});

Deno.test("contract: malformed answers are refused with BAD_RESPONSE", () => {
  for (
    const bad of [null, [], "x", 1, { ...entry, name: 1 }, { ...entry, certPem: null }, {
      ...entry,
      fingerprint: 5,
    }]
  ) {
    refused(() => decodeUserEntry(bad));
  }
  refused(() => decodeUserList({ users: "no" }));
  refused(() => decodeUserList({ users: [entry, { name: "x" }] }));
  assert.deepEqual(decodeUserList({ users: [entry], next: 3 }), { users: [decoded], next: null });
  refused(() => decodeDirectoryInfo({ apiVersion: "1", caCertPem: "", caFingerprint: "" }));
  refused(() => decodeDirectoryInfo({ apiVersion: 1, caCertPem: "", caFingerprint: null }));
  refused(() =>
    decodeIssuedCertificate({ name: "a", certPem: "", caCertPem: "", fingerprint: "", serial: "" })
  );
  refused(() => decodeRevokeAnswer({ name: "a" }));
});

Deno.test("contract: candidates and relay decode; malformed candidates are skipped; relay alone is online", () => {
  const v6 = { host: "2001:db8::7", port: 4000 };
  const relay = { host: "198.51.100.1", port: 10041 };
  const d = decodeUserEntry({ ...entry, candidates: [v6, { host: "", port: 1 }, "x", entry.address], relay });
  assert.deepEqual(d.candidates, [v6, entry.address]);
  assert.deepEqual(d.relay, relay);
  // Relay-only: no address of the user's, yet online through the relay.
  const ro = decodeUserEntry({ ...entry, address: null, candidates: [], relay });
  assert.equal(ro.online, true);
  assert.equal(ro.address, null);
  assert.equal(decodeUserEntry({ ...entry, address: null, candidates: [], relay: null }).online, false);
  assert.equal(decodeUserEntry({ ...entry, relay: { host: "r", port: 0 } }).relay, null);
});

Deno.test("contract: reachable is the checked subset of candidates, in their order; anything else is dropped", () => {
  const lan = { host: "192.168.1.10", port: 4000 };
  const pub = { host: "198.18.0.5", port: 4000 };
  const full = { ...entry, address: lan, candidates: [lan, pub], reachCheckedAt: 1_700_000_000_000 };
  const d = decodeUserEntry({ ...full, reachable: [pub, { host: "203.0.113.9", port: 1 }, "x", lan] });
  assert.deepEqual(d.reachable, [lan, pub], "candidates order; an address nobody published is not listed");
  assert.equal(d.reachCheckedAt, 1_700_000_000_000);
  assert.deepEqual(decodeUserEntry({ ...full, reachable: "all" }).reachable, []);
  assert.equal(decodeUserEntry({ ...full, reachCheckedAt: "now" }).reachCheckedAt, null);
  // The phonebook lists the user's eight plus the address it saw: all nine are kept.
  const nine = [...Array(9).keys()].map((i) => ({ host: `198.18.0.${i + 1}`, port: 4000 }));
  const n = decodeUserEntry({ ...entry, address: nine[0], candidates: nine, reachable: [nine[8]] });
  assert.equal(n.candidates.length, 9);
  assert.deepEqual(n.reachable, [nine[8]]);
});

Deno.test("contract: directory info, issued certificate and error bodies", () => {
  const info = decodeDirectoryInfo({
    apiVersion: 1,
    caCertPem: "pem",
    caFingerprint: "cd".repeat(32),
    inviteOnly: true,
    roughtime: { port: 2002, publicKey: "k", version: "rfc" },
  });
  assert.deepEqual(info.roughtime, { port: 2002, publicKey: "k", version: "rfc" });
  assert.equal(info.inviteOnly, true);
  assert.equal(decodeDirectoryInfo({ ...info, roughtime: { port: "x" } }).roughtime, null);
  const issued = { name: "a", certPem: "c", caCertPem: "ca", fingerprint: "f", serial: "01", notAfter: 5 };
  assert.deepEqual(decodeIssuedCertificate(issued), issued);
  assert.deepEqual(decodeErrorBody({ error: { code: "NAME_TAKEN", message: "m" } }), {
    code: "NAME_TAKEN",
    message: "m",
  });
  assert.equal(decodeErrorBody({ error: { code: 1 } }), null);
  assert.equal(decodeErrorBody("x"), null);
});
