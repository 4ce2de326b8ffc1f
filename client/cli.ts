import type { Command } from "commander";
import { CliError } from "../cli_error.ts";
import { HomeError, isEnrolled, loadHome, lockHome, resolveHomeDir } from "./home.ts";
import { type ChatEngine, startEngineFromHome } from "./engine.ts";
import { linesOf, runHeadless } from "./headless.ts";
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
  advertise?: string;
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
    .option("--listen <host:port>", "where to accept peer connections (default 127.0.0.1:0, any free port)")
    .option("--advertise <host:port>", "the address to publish when it differs from --listen")
    .option("--time-refresh <seconds>", "how often to ask the time servers again (default 600)")
    .option(
      "--time-server <host:port:pubkey[:version]>",
      "another Roughtime server to cross-check the phonebook's time against (repeatable)",
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .option("--public-time-servers", "also cross-check against the public Roughtime servers")
    .action(async (flags: ChatFlags) => {
      const listen = flags.listen ? parseHostPort(flags.listen, "--listen") : undefined;
      const advertise = flags.advertise ? parseHostPort(flags.advertise, "--advertise") : undefined;
      if (advertise && advertise.port === 0) throw new CliError("--advertise needs a real port");
      if (listen && !advertise && (listen.host === "0.0.0.0" || listen.host === "::")) {
        throw new CliError("listening on all addresses: say which one to publish with --advertise HOST:PORT");
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
          advertise,
          timeRefreshIntervalMs,
          extraTimeServers: extra,
          onEvent: early.push,
        });
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
