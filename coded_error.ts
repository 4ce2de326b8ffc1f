/**
 * The base of every error the program raises on purpose: a stable, machine-readable `code` (what tests,
 * the headless protocol and the TUI compare) beside a human message. Each module narrows `C` to its own
 * codes (EngineErrorCode, SessionErrorCode...).
 */
export class CodedError<C extends string = string> extends Error {
  constructor(readonly code: C, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The `code` of any thrown value that carries a string one: ours (CodedError), Node's system and TLS errors
 * (`ECONNREFUSED`, `ERR_SSL_...`), or undefined. */
export function codeOf(e: unknown): string | undefined {
  if (typeof e !== "object" || e === null) return undefined;
  const code = (e as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

/** The message of any thrown value. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
