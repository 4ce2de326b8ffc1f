/**
 * `--database` / SECURECHAT_DATABASE: which store a node uses. A PostgreSQL URL's password is a secret: it is
 * removed from everything printed (banners, errors), and may come from a file instead of the URL.
 */
import { ServerSetupError } from "./errors.ts";

export interface PostgresTarget {
  kind: "postgres";
  url: string;
  /** The URL without its password, safe to print. */
  redacted: string;
  /** A password given apart from the URL (a file), which then overrides the URL's. */
  password?: string;
}

const SCHEMES = ["postgres:", "postgresql:"];

/** The URL with any password replaced by "***"; a string that is not a URL is replaced whole. */
export function redactDatabaseUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparsable database URL)";
  }
}

/** Removes every occurrence of the secrets from `text` (an error message from a driver may quote its input). */
export function scrubSecrets(text: string, secrets: (string | undefined)[]): string {
  let out = text;
  for (const s of secrets) {
    if (s && s.length >= 1) {
      out = out.split(s).join("***");
      const enc = encodeURIComponent(s);
      if (enc !== s) out = out.split(enc).join("***");
    }
  }
  return out;
}

/** The password inside a URL, decoded, or undefined. */
export function urlPassword(url: string): string | undefined {
  try {
    const p = new URL(url).password;
    return p ? decodeURIComponent(p) : undefined;
  } catch {
    return undefined;
  }
}

/** Checks a --database value; throws ServerSetupError("DATABASE") naming the problem, never the password. */
export function parseDatabaseTarget(value: string, password?: string): PostgresTarget {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new ServerSetupError(
      "DATABASE",
      "--database must be a postgres://USER@HOST:PORT/DBNAME URL (without it the embedded SQLite file is used)",
    );
  }
  if (!SCHEMES.includes(u.protocol)) {
    throw new ServerSetupError(
      "DATABASE",
      `--database: unsupported scheme "${u.protocol}"; use postgres://USER@HOST:PORT/DBNAME`,
    );
  }
  if (!u.hostname && !u.searchParams.get("host")) {
    throw new ServerSetupError("DATABASE", `--database ${redactDatabaseUrl(value)} names no host`);
  }
  return { kind: "postgres", url: value, redacted: redactDatabaseUrl(value), password };
}
