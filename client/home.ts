/**
 * The client's home folder (written by `enroll`, read by `chat`): key.pem (0600), cert.pem, ca.pem and
 * config.json. Layout in docs/architecture.md.
 */
import { CodedError } from "../coded_error.ts";
import { join } from "node:path";
import {
  derToPem,
  fingerprintOf,
  normalizeFingerprint,
  pemToDer,
  PkiError,
  restrictDirectory,
  writeSecretFile,
} from "../pki/mod.ts";
import type { RoughtimeVersion, ServerSpec } from "../clock/types.ts";

export const HOME_FILES = {
  key: "key.pem",
  cert: "cert.pem",
  ca: "ca.pem",
  config: "config.json",
} as const;

export class HomeError extends CodedError<"NOT_ENROLLED" | "BAD_HOME" | "HOME_IN_USE"> {}

/** One Roughtime server as stored in config.json (the public key in base64). */
export interface RoughtimeConfigEntry {
  name: string;
  host: string;
  port: number;
  publicKey: string;
  version?: RoughtimeVersion;
}

export interface HomeConfig {
  server: string;
  name: string;
  caFingerprint: string;
  roughtime: RoughtimeConfigEntry[];
}

export interface HomeState {
  dir: string;
  name: string;
  server: string;
  caPem: string;
  caFingerprint: string;
  certPem: string;
  keyPem: string;
  /** The directory's Roughtime server as published by /v1/info. */
  roughtime: ServerSpec[];
}

/** `--home` when given, else $SECURECHAT_HOME, else the platform's data folder. */
export function resolveHomeDir(flag?: string): string {
  if (flag) return flag;
  const env = (k: string) => {
    try {
      return Deno.env.get(k) || undefined;
    } catch {
      return undefined; // no --allow-env: fall through to the next choice
    }
  };
  const fromEnv = env("SECURECHAT_HOME");
  if (fromEnv) return fromEnv;
  if (Deno.build.os === "windows") {
    const appData = env("APPDATA");
    if (appData) return join(appData, "securechat");
  }
  if (Deno.build.os === "darwin") {
    const home = env("HOME");
    if (home) return join(home, "Library", "Application Support", "securechat");
  }
  const xdg = env("XDG_DATA_HOME");
  if (xdg) return join(xdg, "securechat");
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) throw new HomeError("BAD_HOME", "cannot find a home folder: pass --home or set SECURECHAT_HOME");
  return join(home, ".local", "share", "securechat");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

export async function isEnrolled(dir: string): Promise<boolean> {
  for (const f of Object.values(HOME_FILES)) {
    if (!(await exists(join(dir, f)))) return false;
  }
  return true;
}

function decodeBase64(s: string): Uint8Array {
  const bin = atob(s);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function parseConfig(text: string, path: string): HomeConfig {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new HomeError("BAD_HOME", `${path} is not valid JSON`);
  }
  const c = v as Partial<HomeConfig>;
  if (
    typeof v !== "object" || v === null || typeof c.server !== "string" || typeof c.name !== "string" ||
    typeof c.caFingerprint !== "string"
  ) {
    throw new HomeError("BAD_HOME", `${path} lacks server, name or caFingerprint`);
  }
  const rt = Array.isArray(c.roughtime) ? c.roughtime : [];
  for (const r of rt) {
    if (
      typeof r !== "object" || r === null || typeof r.host !== "string" || typeof r.port !== "number" ||
      typeof r.publicKey !== "string"
    ) {
      throw new HomeError("BAD_HOME", `${path}: a roughtime entry lacks host, port or publicKey`);
    }
  }
  return { server: c.server, name: c.name, caFingerprint: c.caFingerprint, roughtime: rt };
}

/** The user's private key, refused (like ssh does) when other users could have read it: it may already be
 * copied, and using it would hide that. */
async function readPrivateKey(path: string): Promise<string> {
  if (Deno.build.os !== "windows") {
    const st = await Deno.stat(path);
    if (st.mode !== null && (st.mode & 0o077) !== 0) {
      throw new HomeError(
        "BAD_HOME",
        `${path} is readable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
      );
    }
  }
  return await Deno.readTextFile(path);
}

/** Reads an enrolled home folder; throws HomeError("NOT_ENROLLED") with the command to run when it is not. */
export async function loadHome(dir: string): Promise<HomeState> {
  if (!(await isEnrolled(dir))) {
    throw new HomeError(
      "NOT_ENROLLED",
      `not enrolled: ${dir} has no certificate yet (run \`securechat enroll --server https://HOST:PORT ` +
        `--name NAME${dir ? ` --home ${dir}` : ""}\`)`,
    );
  }
  const read = (f: string) => Deno.readTextFile(join(dir, f));
  const configPath = join(dir, HOME_FILES.config);
  const config = parseConfig(await read(HOME_FILES.config), configPath);
  const caText = await read(HOME_FILES.ca);
  const caFingerprint = normalizeFingerprint(config.caFingerprint);
  let caDer: Uint8Array;
  try {
    caDer = pemToDer(caText, "CERTIFICATE");
  } catch (e) {
    if (!(e instanceof PkiError)) throw e;
    throw new HomeError("BAD_HOME", `${join(dir, HOME_FILES.ca)} is not exactly one PEM certificate`);
  }
  // Callers get the fingerprinted block alone, re-encoded: other text in the file (a second certificate our
  // PEM reader skips but TLS would read) is never trusted.
  const caPem = derToPem(caDer, "CERTIFICATE");
  if (fingerprintOf(caDer) !== caFingerprint) {
    throw new HomeError(
      "BAD_HOME",
      `${join(dir, HOME_FILES.ca)} does not match the fingerprint in ${configPath}`,
    );
  }
  return {
    dir,
    name: config.name,
    server: config.server,
    caPem,
    caFingerprint,
    certPem: await read(HOME_FILES.cert),
    keyPem: await readPrivateKey(join(dir, HOME_FILES.key)),
    roughtime: config.roughtime.map((r) => ({
      name: r.name,
      host: r.host,
      port: r.port,
      publicKey: decodeBase64(r.publicKey),
      ...(r.version ? { version: r.version } : {}),
    })),
  };
}

/** Writes a complete home folder. The key goes first (0600) and config.json last, so a crash half-way leaves
 * a folder that isEnrolled() does not accept rather than one that looks complete. */
export async function writeHome(
  dir: string,
  files: { keyPem?: string; certPem: string; caPem: string; config: HomeConfig },
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await restrictDirectory(dir);
  if (files.keyPem !== undefined) await writeSecretFile(join(dir, HOME_FILES.key), files.keyPem);
  await atomicWrite(join(dir, HOME_FILES.cert), files.certPem);
  await atomicWrite(join(dir, HOME_FILES.ca), files.caPem);
  await atomicWrite(join(dir, HOME_FILES.config), JSON.stringify(files.config, null, 2) + "\n");
}

/** Replaces the certificate only (renewal): written beside and renamed, so readers never see half a file. */
export async function writeCertificate(dir: string, certPem: string): Promise<void> {
  await atomicWrite(join(dir, HOME_FILES.cert), certPem);
}

async function atomicWrite(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  await Deno.writeTextFile(tmp, text, { mode: 0o644 });
  await Deno.rename(tmp, path);
}

/** The lock file of a home folder: held while `chat` runs. */
export const LOCK_FILE = "chat.lock";
/** How long to wait for the lock before deciding another process holds it. */
const LOCK_WAIT_MS = 300;

export interface HomeLock {
  release(): void;
}

/**
 * Takes the home folder's single-instance lock (an OS file lock, so it is let go when the process dies, even
 * by kill -9). Two `chat` processes on one home would both answer for the same name, read the same store and
 * race each other's outbox.
 * @throws HomeError HOME_IN_USE naming the other process when it holds the lock.
 */
export async function lockHome(dir: string): Promise<HomeLock> {
  const path = join(dir, LOCK_FILE);
  const file = await Deno.open(path, { read: true, write: true, create: true });
  // Deno has no "try lock": wait briefly; a lock not granted by then is held by someone else. The pending
  // request is abandoned (the process exits with the error).
  let timer: ReturnType<typeof setTimeout> | undefined;
  const got = await Promise.race([
    file.lock(true).then(() => true),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), LOCK_WAIT_MS))),
  ]);
  clearTimeout(timer);
  if (!got) {
    let holder = "";
    try {
      const pid = (await Deno.readTextFile(path)).trim();
      if (/^\d+$/.test(pid)) holder = ` (pid ${pid})`;
    } catch {
      // The pid is only a hint.
    }
    throw new HomeError(
      "HOME_IN_USE",
      `another securechat chat is already running on ${dir}${holder}: use that one, quit it first, ` +
        `or give this one its own --home`,
    );
  }
  await file.truncate(0);
  await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  return {
    release() {
      try {
        file.unlockSync();
        file.close();
      } catch {
        // Already closed: the OS lets go of the lock with the file.
      }
    },
  };
}
