/** Pieces of the reachability tests in network namespaces (tests/reach_*_test.ts). */
import assert from "node:assert/strict";
import type { Lab } from "./netlab.ts";
import { CHILD_ENV, securechatArgs } from "./cli.ts";

/** `securechat serve` on the lab host "pb" (phonebook, CA, Roughtime, relay), the CA fingerprint read from
 * its banner; relayed bytes are appended to `capture`. */
export async function startServe(lab: Lab, data: string, capture: string) {
  const ip = lab.host("pb").address;
  const child = lab.command("pb", Deno.execPath(), [
    ...securechatArgs("serve", "--data", data, "--listen", `${ip}:10040`, "--hostname", ip),
  ], {
    env: { ...CHILD_ENV, SECURECHAT_RELAY_CAPTURE: capture },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const reader = child.stdout.getReader();
  const dec = new TextDecoder();
  while (!/Users enroll with/.test(out)) {
    const r = await reader.read();
    if (r.done) throw new Error(`serve ended: ${out}`);
    out += dec.decode(r.value);
  }
  reader.releaseLock();
  void child.stdout.cancel().catch(() => {});
  const fp = /CA fingerprint \(SHA-256\): ([0-9a-f ]+)/.exec(out)![1].replaceAll(" ", "");
  assert.match(out, /Relay on tcp 198\.18\.0\.\d+:10041/);
  return { child, url: `https://${ip}:10040`, fp };
}

/** `securechat enroll` run on the user's own machine of the lab. */
export async function enrollIn(
  lab: Lab,
  name: string,
  serve: { url: string; fp: string },
  home: string,
): Promise<void> {
  const out = await lab.command(name, Deno.execPath(), [
    ...securechatArgs(
      "enroll",
      "--server",
      serve.url,
      "--ca-fingerprint",
      serve.fp,
      "--name",
      name,
      "--home",
      home,
    ),
  ], { env: CHILD_ENV, stdout: "piped", stderr: "piped", stdin: "null" }).output();
  assert.equal(out.code, 0, `${name} enroll: ${new TextDecoder().decode(out.stderr)}`);
}

const PORTMAP_RESPONDER = new URL("./portmap_responder.ts", import.meta.url).pathname;

/** `deno` arguments that run the lab's port-mapping service (portmap_responder.ts) in router `router`, with
 * the responder's `flags`. */
export function responderArgs(lab: Lab, router: string, flags: string[] = []): string[] {
  return [
    "run",
    "--allow-net",
    "--allow-run",
    PORTMAP_RESPONDER,
    lab.routerLan.get(router)!,
    lab.routerWan.get(router)!,
    ...flags,
  ];
}
