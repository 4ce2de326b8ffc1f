/**
 * The phonebook's documented answers to slow and oversized requests (docs/usage-serve.md, "Limits"): a client
 * whose headers do not arrive in time reads 408 `TIMEOUT` before the close, and a body over the limit that
 * the client keeps sending after a declared Content-Length still gets a readable 413 `BODY_TOO_LARGE`
 * (the server drains, within bounds, instead of resetting the connection under the client's feet).
 */
import assert from "node:assert/strict";
import { dumpDatabase, rawConnect, startTestDirectory } from "./helpers/directory.ts";

const LIMITS = {
  headersTimeoutMs: 400,
  bodyTimeoutMs: 400,
  idleTimeoutMs: 5000,
  ratePerSecond: 10_000,
  rateBurst: 10_000,
};

Deno.test("phonebook: headers that never complete get 408 TIMEOUT, then the connection is closed", async () => {
  const t = await startTestDirectory({ limits: LIMITS });
  try {
    const before = await dumpDatabase(t);
    // Silent after TLS, and partial headers trickled slower than the deadline allows.
    const silent = await rawConnect(t.dir);
    const partial = await rawConnect(t.dir);
    const request = "GET /v1/info HTTP/1.1\r\nHost: x\r\nX-Slow: " + "a".repeat(200);
    let i = 0;
    const trickle = setInterval(() => {
      if (!partial.socket.destroyed && i < request.length) partial.socket.write(request[i++]);
    }, 20);
    await Promise.all([silent.closed, partial.closed]);
    clearInterval(trickle);
    assert.ok(i < request.length, "the server waited for the whole trickle");
    for (const c of [silent, partial]) {
      assert.match(c.received(), /^HTTP\/1\.1 408/);
      assert.match(c.received(), /"code":"TIMEOUT"/);
    }
    assert.equal(await dumpDatabase(t), before);
  } finally {
    await t.close();
  }
});

/** Python's http.client sends the whole body before it reads the answer (no Expect: 100-continue), the way
 * many simple clients do: a server that closes at once then resets the connection, and the client's kernel
 * throws away the 413 it had already received. Prints "STATUS BODY" or "EXC ...". */
const PY_POST = `
import ssl, sys, http.client
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ssl._create_unverified_context(), timeout=20)
try:
    c.request("POST", "/v1/enroll", body=b"x" * int(sys.argv[2]), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    print(r.status, r.read().decode())
except Exception as e:
    print("EXC", type(e).__name__, e)
`;

function pythonAvailable(): boolean {
  try {
    return new Deno.Command("python3", {
      args: ["-c", "import ssl, http.client"],
      stdout: "null",
      stderr: "null",
    })
      .outputSync().success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "phonebook: a body over the limit sent whole after its Content-Length still gets a readable 413",
  ignore: !pythonAvailable(),
  fn: async () => {
    const t = await startTestDirectory({ limits: LIMITS });
    try {
      const before = await dumpDatabase(t);
      // Several tries: whether a reset arrives before the client reads depends on timing.
      for (const size of [64 * 1024, ...Array(4).fill(1024 * 1024), ...Array(4).fill(3 * 1024 * 1024)]) {
        const out = await new Deno.Command("python3", {
          args: ["-c", PY_POST, String(t.dir.port), String(size)],
          stdout: "piped",
          stderr: "piped",
        }).output();
        const text = new TextDecoder().decode(out.stdout).trim();
        assert.match(text, /^413 .*"code":"BODY_TOO_LARGE"/, `body of ${size} bytes: ${text}`);
      }
      assert.equal(await dumpDatabase(t), before);
    } finally {
      await t.close();
    }
  },
});
