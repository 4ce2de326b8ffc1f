/**
 * The port `chat` listens on, kept in the home folder (`listen.json`) so that it stays the same across
 * restarts: peers, port mappings and firewall rules made for it keep working. The first run takes any free
 * port and writes it down; a run that finds it taken by something else takes another and writes that.
 */
import net from "node:net";
import { join } from "node:path";

export const LISTEN_FILE = "listen.json";

/** Where `chat` listens when no --listen is given: every interface, IPv6 and IPv4 (a dual-stack socket). */
export const DEFAULT_LISTEN_HOST = "::";

export async function loadListenPort(homeDir: string): Promise<number | null> {
  try {
    const v = JSON.parse(await Deno.readTextFile(join(homeDir, LISTEN_FILE)));
    return Number.isInteger(v?.port) && v.port >= 1 && v.port <= 65535 ? v.port : null;
  } catch {
    return null;
  }
}

export async function saveListenPort(homeDir: string, port: number): Promise<void> {
  const tmp = join(homeDir, `${LISTEN_FILE}.tmp`);
  await Deno.writeTextFile(tmp, JSON.stringify({ port }) + "\n", { mode: 0o600 });
  await Deno.rename(tmp, join(homeDir, LISTEN_FILE));
}

/** Whether `host:port` can be bound now (the port may be taken between this check and the real bind; the
 * engine's bind then fails with a clear error). */
function canBind(host: string, port: number): Promise<"ok" | "in-use" | "no-family"> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", (e: Error & { code?: string }) => {
      resolve(e.code === "EADDRINUSE" ? "in-use" : "no-family");
    });
    s.listen(port, host, () => s.close(() => resolve("ok")));
  });
}

/** The default listen address: all interfaces (IPv4 only on a machine without IPv6) on the kept port, or
 * any free port when it is taken (`moved` says so). */
export async function defaultListen(
  homeDir: string,
): Promise<{ host: string; port: number; moved: number | null }> {
  const saved = await loadListenPort(homeDir);
  let host = DEFAULT_LISTEN_HOST;
  if (await canBind(host, 0) === "no-family") host = "0.0.0.0";
  if (saved === null) return { host, port: 0, moved: null };
  const r = await canBind(host, saved);
  return r === "ok" ? { host, port: saved, moved: null } : { host, port: 0, moved: saved };
}
