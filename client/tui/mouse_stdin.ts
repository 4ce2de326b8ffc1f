/**
 * Ink reads the keyboard from stdin and throws mouse reports away (they map to no key). This stands between
 * the terminal and Ink: mouse reports (SGR, "ESC [ < b ; x ; y M/m") are taken out and handed to listeners,
 * everything else reaches Ink unchanged. It passes on what Ink uses of a stdin: raw mode, encoding, ref/unref,
 * the "readable" event and read().
 */
import { EventEmitter } from "node:events";

// deno-lint-ignore no-control-regex
const MOUSE_REPORT = /\x1b\[<\d+;\d+;\d+[Mm]/g;

/** What the wrapper needs of the real stdin (process.stdin satisfies it). */
export interface RawInput {
  isTTY?: boolean;
  setRawMode?(mode: boolean): unknown;
  setEncoding(encoding: BufferEncoding): unknown;
  read(): string | Uint8Array | null;
  on(event: "readable", fn: () => void): unknown;
  off(event: "readable", fn: () => void): unknown;
  ref?(): unknown;
  unref?(): unknown;
}

export interface MouseSource {
  /** Calls `fn` with each mouse report; returns the function that stops it. */
  subscribe(fn: (report: string) => void): () => void;
}

export class MouseFilteringStdin extends EventEmitter implements MouseSource {
  readonly isTTY: boolean;
  private readonly queue: string[] = [];
  private readonly mice = new Set<(report: string) => void>();
  private attached = false;
  private readonly decoder = new TextDecoder();

  constructor(private readonly inner: RawInput) {
    super();
    this.isTTY = inner.isTTY === true;
    // The real stream is read only while Ink listens, so it stops holding the process once Ink lets go.
    this.on("newListener", (event: string) => {
      if (event === "readable" && !this.attached) {
        this.attached = true;
        inner.on("readable", this.pump);
      }
    });
    this.on("removeListener", (event: string) => {
      if (event === "readable" && this.listenerCount("readable") === 0 && this.attached) {
        this.attached = false;
        inner.off("readable", this.pump);
      }
    });
  }

  subscribe(fn: (report: string) => void): () => void {
    this.mice.add(fn);
    return () => this.mice.delete(fn);
  }

  setRawMode(mode: boolean): this {
    this.inner.setRawMode?.(mode);
    return this;
  }

  setEncoding(encoding: BufferEncoding): this {
    this.inner.setEncoding(encoding);
    return this;
  }

  ref(): this {
    this.inner.ref?.();
    return this;
  }

  unref(): this {
    this.inner.unref?.();
    return this;
  }

  read(): string | null {
    return this.queue.shift() ?? null;
  }

  private readonly pump = (): void => {
    const reports: string[] = [];
    let chunk;
    while ((chunk = this.inner.read()) !== null) {
      const text = typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
      const rest = text.replace(MOUSE_REPORT, (r) => {
        reports.push(r);
        return "";
      });
      if (rest !== "") this.queue.push(rest);
    }
    for (const r of reports) for (const fn of [...this.mice]) fn(r);
    if (this.queue.length > 0) this.emit("readable");
  };
}
