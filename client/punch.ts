/**
 * TCP hole punching (the direct upgrade of a relayed session): both ends connect to each other at the same
 * time, each from a port of its own that nothing listens on, timed through the relay. Each end's outgoing SYN
 * opens its NAT's mapping; the other's SYN then arrives as part of that flow (TCP simultaneous open, or a
 * plain connect once the far mapping exists). Works through NATs that keep the source port (Linux
 * masquerade, most home routers: "cone"), never through one that picks a new port per destination
 * ("symmetric"). The port must not be our listener's: Deno's node:net binds `localPort` for a connect only
 * when nothing listens on it (docs/protocol.md "Reachability").
 */
import net from "node:net";

/** A port nothing listens on now (bound and let go; another program could take it in between). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "0.0.0.0", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Connects from `localPort` to `host:port` again and again (every `retryMs`, a refusal is expected until
 * the far side's mapping exists) until one connection is made or `timeoutMs` passed. */
export function punchConnect(
  host: string,
  port: number,
  localPort: number,
  timeoutMs: number,
  retryMs = 100,
): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    let last = "no answer";
    const attempt = () => {
      if (Date.now() >= deadline) {
        return reject(new Error(`hole punching to ${host}:${port} failed: ${last}`));
      }
      const s = net.connect({ host, port, localPort });
      const giveUp = setTimeout(() => s.destroy(new Error("timeout")), Math.max(200, deadline - Date.now()));
      s.once("connect", () => {
        clearTimeout(giveUp);
        s.removeAllListeners("error");
        s.on("error", () => {});
        resolve(s);
      });
      s.once("error", (e: Error & { code?: string }) => {
        clearTimeout(giveUp);
        last = e.code ?? e.message;
        s.destroy();
        setTimeout(attempt, retryMs);
      });
    };
    attempt();
  });
}
