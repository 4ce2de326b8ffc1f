/**
 * The baseline of `deno task bench reach`'s lab rows: a bare mutual TLS 1.3 handshake (node:tls, the users'
 * own certificates, as a peer session uses) between two lab namespaces, with nothing of securechat on top.
 * Run inside a namespace by bench/reach_paths.ts:
 *   deno run --allow-net --allow-read tls_probe.ts serve HOME HOST PORT      prints "listening"
 *   deno run --allow-net --allow-read tls_probe.ts dial HOME HOST PORT N     prints {"medianMs":...}
 * where HOME is an enrolled user's home folder (its certificate, key and CA).
 */
import net from "node:net";
import tls from "node:tls";
import { loadHome } from "../client/home.ts";
import { percentile } from "./harness.ts";

const WARM_UP = 3;
const [mode, homeDir, host, portText, countText] = Deno.args;
const home = await loadHome(homeDir);
const port = Number(portText);

if (mode === "serve") {
  const srv = tls.createServer({
    cert: home.certPem,
    key: home.keyPem,
    ca: home.caPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
  }, (s) => {
    s.on("error", () => {});
    // One byte after the handshake: the client counts the handshake done when the server has checked its
    // certificate too (with TLS 1.3 the client's secureConnect comes before that).
    s.write("k");
  });
  srv.on("error", (e) => {
    console.error(String(e));
    Deno.exit(1);
  });
  srv.listen(port, host, () => console.log("listening"));
} else if (mode === "dial") {
  const times: number[] = [];
  // The first few warm the process up (code compiled, key objects parsed): not part of a handshake.
  for (let i = -WARM_UP; i < Number(countText); i++) {
    const t = performance.now();
    await new Promise<void>((resolve, reject) => {
      const raw = net.connect({ host, port });
      raw.once("error", reject);
      const c = tls.connect({
        socket: raw,
        cert: home.certPem,
        key: home.keyPem,
        ca: home.caPem,
        minVersion: "TLSv1.3",
        // The users' certificates name users, not addresses: as in a peer session, the name is checked by
        // the application, not here.
        checkServerIdentity: () => undefined,
      });
      c.once("error", reject);
      c.once("data", () => {
        c.destroy();
        resolve();
      });
    });
    if (i >= 0) times.push(performance.now() - t);
  }
  console.log(JSON.stringify({ medianMs: percentile(times.sort((a, b) => a - b), 50) }));
} else {
  console.error("usage: tls_probe.ts serve|dial HOME HOST PORT [N]");
  Deno.exit(2);
}
