/**
 * TCP hole punching (the direct upgrade of a relayed session): both ends connect to each other at the same
 * time, each from a port of its own that nothing listens on, timed through the relay. Each end's outgoing SYN
 * opens its NAT's mapping; the other's SYN then arrives as part of that flow (TCP simultaneous open, or a
 * plain connect once the far mapping exists). Works through NATs that keep the source port (Linux
 * masquerade, most home routers: "cone"), never through one that picks a new port per destination
 * ("symmetric"). Over IPv6 there is no NAT, only the stateful firewall of a home router, which lets in what
 * answers a flow its LAN started: the same simultaneous open gets through whatever NAT the IPv4 side has, as
 * long as each end connects from the address the other aims at (`localAddress`). The port must not be our
 * listener's: Deno's node:net binds `localPort` for a connect only when nothing listens on it
 * (docs/protocol.md "Reachability").
 */
import net from "node:net";

/** A port nothing listens on now, on IPv6 and IPv4 alike where the machine has IPv6 (bound on the
 * dual-stack "::" and let go; another program could take it in between). */
export function freePort(): Promise<number> {
  const on = (host: string) =>
    new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once("error", reject);
      s.listen(0, host, () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
  return on("::").catch(() => on("0.0.0.0"));
}

/** Connects from `localPort` (on `localAddress`, when given) to `host:port` again and again (every
 * `retryMs`, a refusal is expected until the far side's mapping exists) until one connection is made or
 * `timeoutMs` passed. */
export function punchConnect(
  host: string,
  port: number,
  localPort: number,
  timeoutMs: number,
  retryMs = 100,
  localAddress?: string,
): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    let last = "no answer";
    const attempt = () => {
      if (Date.now() >= deadline) {
        return reject(new Error(`hole punching to ${host}:${port} failed: ${last}`));
      }
      const s = net.connect({ host, port, localPort, ...(localAddress ? { localAddress } : {}) });
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
