/**
 * A program running in a real terminal (a detached tmux session), for tests of what a person sees: type keys,
 * paste, resize, read the screen. The pane outlives the program (a `sleep` after it) so its exit status can
 * be read from the screen as `EXIT-STATUS=N`. Tests that use it are wrapped in `withTools("tmux", ...)`.
 */
const REPO = new URL("../..", import.meta.url).pathname;

export async function tmux(...args: string[]): Promise<string> {
  const out = await new Deno.Command("tmux", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`tmux ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

/** new-session, again when it meets the tmux server of the last test while that one is shutting down. */
export async function newSession(...args: string[]): Promise<void> {
  for (let i = 0;; i++) {
    try {
      await tmux("new-session", ...args);
      return;
    } catch (e) {
      if (i >= 4 || !/server exited unexpectedly/.test(String(e))) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

export class Screen {
  constructor(readonly session: string) {}

  /** Runs `cmd` (a shell command, in the repository's folder) in a `columns` x `rows` terminal. */
  static async start(cmd: string, columns: number, rows: number): Promise<Screen> {
    const session = `sctest-${crypto.randomUUID().slice(0, 8)}`;
    const wrapped =
      `cd '${REPO}' && export NO_COLOR=1 RUST_BACKTRACE=0 && ${cmd}; echo "EXIT-STATUS=$?"; sleep 60`;
    await newSession("-d", "-s", session, "-x", String(columns), "-y", String(rows), wrapped);
    return new Screen(session);
  }

  capture(): Promise<string> {
    return tmux("capture-pane", "-p", "-t", this.session);
  }

  /** A tmux format of the pane, e.g. "#{pane_title}". */
  display(format: string): Promise<string> {
    return tmux("display-message", "-p", "-t", this.session, format).then((s) => s.trim());
  }

  /** Polls the screen until `check` holds; returns that screen. */
  async waitFor(what: string, check: (s: string) => boolean, ms = 20_000): Promise<string> {
    const end = performance.now() + ms;
    let last = "";
    while (performance.now() < end) {
      last = await this.capture();
      if (check(last)) return last;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting for ${what}; screen was:\n${last}`);
  }

  /** Types text literally (no key names), then optional named keys. */
  async type(text: string, ...keys: string[]): Promise<void> {
    if (text) await tmux("send-keys", "-t", this.session, "-l", text);
    if (keys.length) await tmux("send-keys", "-t", this.session, ...keys);
  }

  /** Pastes `text` the way a terminal does (bracketed paste). */
  async paste(text: string): Promise<void> {
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeTextFile(file, text);
      await tmux("load-buffer", "-b", this.session, file);
      await tmux("paste-buffer", "-p", "-d", "-b", this.session, "-t", this.session);
    } finally {
      await Deno.remove(file);
    }
  }

  resize(columns: number, rows: number): Promise<string> {
    return tmux("resize-window", "-t", this.session, "-x", String(columns), "-y", String(rows));
  }

  /** Quits the program with Ctrl+C (so a failed test still lets it clean up), then ends the session. */
  async close(): Promise<void> {
    try {
      if (!(await this.capture()).includes("EXIT-STATUS=")) {
        await this.type("", "C-c");
        await this.waitFor("exit before closing", (t) => t.includes("EXIT-STATUS="), 15_000);
      }
    } catch {
      // Already gone, or stuck: the session is killed below either way.
    }
    await tmux("kill-session", "-t", this.session).catch(() => "");
  }
}
