import type { Command } from "commander";
import { CliError } from "../cli_error.ts";
import { HomeError, isEnrolled, loadHome, lockHome, resolveHomeDir } from "./home.ts";
import { type ChatEngine, startEngineFromHome } from "./engine.ts";
import { linesOf, runHeadless } from "./headless.ts";
import { defaultListen, saveListenPort } from "./listen_port.ts";
import { EarlyEvents } from "./early_events.ts";
import { parseServerSpec, PUBLIC_SERVERS, type ServerSpec } from "../clock/mod.ts";

/** HOST:PORT or [IPv6]:PORT; port 0 means any free port. Throws CliError. */
export function parseHostPort(s: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new CliError(`bad ${what} "${s}" (want HOST:PORT)`);
  return { host: m[1] ?? m[2], port };
}

interface ChatFlags {
  headless?: boolean;
  home?: string;
  listen?: string;
  advertise?: string[];
  relay: boolean;
  relayOnly?: boolean;
  portMapping: boolean;
  timeRefresh?: string;
  timeServer?: string[];
  publicTimeServers?: boolean;
}

/** The Roughtime servers to cross-check the phonebook's against: `--time-server` specs, then the public list. */
export function extraTimeServers(specs: string[], withPublic: boolean): ServerSpec[] {
  const out: ServerSpec[] = [];
  for (const s of specs) {
    try {
      out.push(parseServerSpec(s));
    } catch (e) {
      throw new CliError(`bad --time-server "${s}": ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return withPublic ? [...out, ...PUBLIC_SERVERS] : out;
}

/** `securechat chat`: the terminal UI, or JSON lines with --headless. */
export function registerChatCommand(program: Command): void {
  program.command("chat")
    .description("chat with a contact over mutually authenticated TLS 1.3")
    .option("--headless", "speak JSON lines on stdin/stdout instead of the terminal UI")
    .option("--home <dir>", "home folder (default $SECURECHAT_HOME or ~/.local/share/securechat)")
    .option(
      "--listen <host:port>",
      "where to accept peer connections (default every interface, IPv6 and IPv4, on a port kept in the home folder)",
    )
    .option(
      "--advertise <host:port>",
      "an address to publish instead of the interfaces' (repeatable, best first)",
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option("--no-relay", "do not use the phonebook's relay (peers behind NAT may then be unreachable)")
    .option(
      "--no-port-mapping",
      "do not ask the router to forward a port to us (PCP, NAT-PMP, UPnP-IGD v1 and v2)",
    )
    .option(
      "--relay-only",
      "publish no address of ours and reach peers only through the relay: they never learn our IP address",
    )
    .option("--time-refresh <seconds>", "how often to ask the time servers again (default 600)")
    .option(
      "--time-server <host:port:pubkey[:version]>",
      "another Roughtime server to cross-check the phonebook's time against (repeatable)",
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option("--public-time-servers", "also cross-check against the public Roughtime servers")
    .action(async (flags: ChatFlags) => {
      let listen = flags.listen ? parseHostPort(flags.listen, "--listen") : undefined;
      const advertise = (flags.advertise ?? []).map((a) => parseHostPort(a, "--advertise"));
      if (advertise.some((a) => a.port === 0)) throw new CliError("--advertise needs a real port");
      if (flags.relayOnly && flags.relay === false) {
        throw new CliError("--relay-only needs the relay: drop --no-relay");
      }
      if (flags.relayOnly && advertise.length > 0) {
        throw new CliError("--relay-only publishes no address: drop --advertise");
      }
      let timeRefreshIntervalMs: number | undefined;
      if (flags.timeRefresh !== undefined) {
        const secs = Number(flags.timeRefresh);
        if (!Number.isFinite(secs) || secs < 0.1 || secs > 86_400) {
          throw new CliError(`bad --time-refresh "${flags.timeRefresh}" (seconds, 0.1 to 86400)`);
        }
        timeRefreshIntervalMs = Math.round(secs * 1000);
      }
      const extra = extraTimeServers(flags.timeServer ?? [], flags.publicTimeServers === true);
      const dir = resolveHomeDir(flags.home);
      if (!(await isEnrolled(dir))) {
        if (flags.headless) {
          throw new CliError(`not enrolled: ${dir} (run \`securechat enroll\` first)`);
        }
        await (await loadTui()).runFirstRun(dir);
      }
      const home = await loadHome(dir);
      let moved: number | null = null;
      // Relay-only listens on loopback alone: a peer that learnt our address must not find us answering.
      if (!listen && flags.relayOnly) listen = { host: "127.0.0.1", port: 0 };
      const keepPort = !listen;
      if (!listen) {
        const d = await defaultListen(dir);
        moved = d.moved;
        listen = { host: d.host, port: d.port };
      }
      const listenAt = listen;
      let lock;
      try {
        lock = await lockHome(dir);
      } catch (e) {
        if (e instanceof HomeError) throw new CliError(e.message);
        throw e;
      }
      try {
        // Subscribed before start: what the engine says while starting reaches the front end.
        const early = new EarlyEvents();
        const engine: ChatEngine = await startEngineFromHome(home, {
          listen,
          advertise: advertise.length > 0 ? advertise : undefined,
          relay: flags.relay === false ? null : undefined,
          relayOnly: flags.relayOnly === true,
          portMapping: flags.portMapping !== false && !noPortMappingFromEnv(),
          timeRefreshIntervalMs,
          extraTimeServers: extra,
          onEvent: early.push,
        });
        if (keepPort && engine.address.port !== listenAt.port) {
          await saveListenPort(dir, engine.address.port).catch(() => {});
        }
        if (moved !== null && flags.headless) {
          // Standard error: the JSON lines on standard output are for the program driving us.
          console.error(
            `port ${moved} (kept in the home folder) is in use; listening on ${engine.address.port}`,
          );
        }
        try {
          if (flags.headless) await headless(engine, early);
          // The terminal UI handles its own signals and closes the engine when the user quits.
          else await (await loadTui()).runTui(engine, { home: dir, early });
        } finally {
          await engine.close();
        }
      } finally {
        lock.release();
      }
    });
}

/** SECURECHAT_NO_PORT_MAPPING=1 is --no-port-mapping (the test suite sets it for every chat it runs outside
 * the namespaces it makes: a test must not talk to the machine's real router). */
function noPortMappingFromEnv(): boolean {
  try {
    return Deno.env.get("SECURECHAT_NO_PORT_MAPPING") === "1";
  } catch {
    return false;
  }
}

/** JSON lines until quit, end of input, or SIGINT/SIGTERM (each of which withdraws our address first). */
async function headless(engine: ChatEngine, early: EarlyEvents): Promise<void> {
  const stop = () => void engine.close();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, stop);
  const enc = new TextEncoder();
  try {
    await Promise.race([
      runHeadless(engine, {
        lines: linesOf(Deno.stdin.readable),
        write: (line) => Deno.stdout.writeSync(enc.encode(line + "\n")),
      }, early),
      engine.closed,
    ]);
    // Still under our signal handlers: a signal during shutdown must not cut the withdrawal short.
    await engine.close();
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, stop);
  }
}

/** The terminal UI is loaded only when used: its libraries install process-wide handlers (signal-exit
 * re-raises SIGTERM) that would race the headless mode's clean shutdown. */
function loadTui(): Promise<typeof import("./tui/mod.ts")> {
  return import("./tui/mod.ts");
}
