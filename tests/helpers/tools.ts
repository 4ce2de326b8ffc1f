/**
 * Debian tools some tests drive (openssl, faketime, tmux, sslscan...). On a laptop without one, its tests are
 * skipped with a message that says what to install. In CI (`SECURECHAT_REQUIRE_TOOLS=1`, set by `.ci/run`)
 * a missing tool is a test failure instead: a green CI run then means every one of those tests really ran.
 */

/** The environment variable that turns a missing tool from a skip into a failure. */
export const REQUIRE_TOOLS_ENV = "SECURECHAT_REQUIRE_TOOLS";

/** Raised inside a test that needs a tool CI was told to provide. */
export class ToolMissingError extends Error {
  readonly code = "TOOL_MISSING";
  constructor(readonly tool: string) {
    super(
      `${tool} is not installed, and ${REQUIRE_TOOLS_ENV}=1 requires it (apt-get install ${packageOf(tool)})`,
    );
    this.name = "ToolMissingError";
  }
}

/** How to ask each tool for its version without side effects; `--version` for the others. */
const PROBE_ARGS: Record<string, string[]> = {
  openssl: ["version"],
  tmux: ["-V"],
  faketime: ["--version"],
  sslscan: ["--version"],
  ip: ["-V"],
  nft: ["--version"],
};

/** The Debian package of each tool whose name differs from it (miniupnpd: the build for nftables). */
const PACKAGES: Record<string, string> = { ip: "iproute2", nft: "nftables", miniupnpd: "miniupnpd-nftables" };

function packageOf(tool: string): string {
  return tool.split(", ").map((t) => PACKAGES[t] ?? t).join(" ");
}

const probed = new Map<string, boolean>();
const warned = new Set<string>();

/** True when SECURECHAT_REQUIRE_TOOLS=1. */
export function toolsRequired(): boolean {
  return Deno.env.get(REQUIRE_TOOLS_ENV) === "1";
}

/** True when `name` runs here (probed once per process by running it with a version flag). */
export function haveTool(name: string): boolean {
  let ok = probed.get(name);
  if (ok === undefined) {
    try {
      ok = new Deno.Command(name, { args: PROBE_ARGS[name] ?? ["--version"], stdout: "null", stderr: "null" })
        .outputSync().success;
    } catch {
      ok = false;
    }
    probed.set(name, ok);
  }
  return ok;
}

function warnSkip(tool: string, what: string): void {
  if (warned.has(`${tool}/${what}`)) return;
  warned.add(`${tool}/${what}`);
  console.warn(`${tool} is not installed (apt-get install ${packageOf(tool)}): skipping ${what}`);
}

/** For a check inside a larger test: true when `tool` is there; when it is not, false after a warning, or a
 * ToolMissingError when tools are required. */
export function useTool(tool: string, what = `the ${tool} checks`): boolean {
  if (haveTool(tool)) return true;
  if (toolsRequired()) throw new ToolMissingError(tool);
  warnSkip(tool, what);
  return false;
}

/** A Deno.test definition that needs `tools`: unchanged when they are all present; otherwise ignored with a
 * message, or, when tools are required, a test that fails naming the missing tool. */
export function withTools(tools: string | string[], def: Deno.TestDefinition): Deno.TestDefinition {
  const missing = (typeof tools === "string" ? [tools] : tools).filter((t) => !haveTool(t));
  if (missing.length === 0) return def;
  if (toolsRequired()) {
    return {
      ...def,
      fn: () => {
        throw new ToolMissingError(missing.join(", "));
      },
    };
  }
  for (const t of missing) warnSkip(t, `"${def.name}"`);
  return { ...def, ignore: true };
}
