/**
 * `securechat serve` (the phonebook: directory + CA + Roughtime server), `serve invite` (one-time enrollment
 * token) and `serve revoke NAME` (admin revocation).
 */
import type { Command } from "commander";
import { join } from "node:path";
import dgram from "node:dgram";
import { CliError } from "../cli_error.ts";
import {
  createInviteToken,
  DEFAULT_RELAY_PORT,
  issueRelayCertificate,
  redactDatabaseUrl,
  revokeUser,
  ServerSetupError,
  startDirectoryServer,
  startStandaloneRelay,
  type StoreConfig,
} from "./mod.ts";
import { DEFAULT_HOSTNAMES, DEFAULT_LISTEN_HOST, DEFAULT_PORT, DEFAULT_ROUGHTIME } from "./limits.ts";
import { canonicalUsername, UsernameError } from "../pki/mod.ts";

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" (host defaults to `defaultHost`). */
export function parseHostPort(input: string, defaultHost: string): { hostname: string; port: number } {
  let host: string;
  let port: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(input);
  const v4 = /^([^:\[\]]*):(\d+)$/.exec(input);
  if (v6) [host, port] = [v6[1], v6[2]];
  else if (v4) [host, port] = [v4[1] || defaultHost, v4[2]];
  else if (/^\d+$/.test(input)) [host, port] = [defaultHost, input];
  else throw new CliError(`"${input}" is not HOST:PORT`);
  const n = Number(port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new CliError(`port ${port} is out of range`);
  return { hostname: host, port: n };
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** --data, else $SECURECHAT_DATA, else the platform's data folder. */
export function resolveDataDir(flag?: string): string {
  if (flag) return flag;
  const fromEnv = env("SECURECHAT_DATA");
  if (fromEnv) return fromEnv;
  const xdg = env("XDG_DATA_HOME");
  if (xdg) return join(xdg, "securechat-server");
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) throw new CliError("cannot find a data folder: pass --data DIR or set SECURECHAT_DATA");
  return join(home, ".local", "share", "securechat-server");
}

async function readPassphrase(file?: string): Promise<string | undefined> {
  if (file) {
    try {
      return (await Deno.readTextFile(file)).replace(/\r?\n$/, "");
    } catch (e) {
      throw new CliError(`cannot read the passphrase file ${file}: ${e instanceof Error ? e.message : e}`);
    }
  }
  return env("SECURECHAT_CA_PASSPHRASE");
}

/** A fingerprint as it is shown everywhere (server banner, enroll, first run, chat): groups of four. */
function groupHex(hex: string): string {
  return hex.toLowerCase().match(/.{1,4}/g)!.join(" ");
}

/** Binds and lets go of the HTTPS and Roughtime ports: in use, the error names the flag that moves them. */
async function checkPortsFree(
  listen: { hostname: string; port: number },
  roughtime: { hostname: string; port: number } | null,
  relay: { hostname: string; port: number } | null = null,
): Promise<void> {
  const tcp: [{ hostname: string; port: number } | null, string][] = [[listen, "--listen"], [
    relay,
    "--relay-listen (or --no-relay)",
  ]];
  for (const [a, flag] of tcp) {
    if (!a || a.port === 0) continue;
    try {
      Deno.listen({ hostname: a.hostname, port: a.port }).close();
    } catch (e) {
      if (!(e instanceof Deno.errors.AddrInUse)) throw e;
      throw new CliError(
        `port ${a.port} on ${a.hostname} is in use (another securechat serve?): stop it, or pick ` +
          `another with ${flag} HOST:PORT; nothing was written`,
      );
    }
  }
  if (roughtime && roughtime.port !== 0) {
    const socket = dgram.createSocket(roughtime.hostname.includes(":") ? "udp6" : "udp4");
    const inUse = await new Promise<boolean>((resolve) => {
      socket.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "EADDRINUSE"));
      socket.bind(roughtime.port, roughtime.hostname, () => resolve(false));
    });
    await new Promise<void>((r) => socket.close(() => r()));
    if (inUse) {
      throw new CliError(
        `the Roughtime port ${roughtime.port} (UDP) on ${roughtime.hostname} is in use: stop what uses it, ` +
          `or pick another with --roughtime-listen HOST:PORT (or --no-roughtime); nothing was written`,
      );
    }
  }
}

/** SECURECHAT_RELAY_CAPTURE=FILE appends every byte the relay forwards to FILE: the tests search it for
 * message texts to show that a relay handles only ciphertext (it holds what any relay operator could
 * record anyway). */
function relayCapture(): ((chunk: Uint8Array) => void) | undefined {
  const file = env("SECURECHAT_RELAY_CAPTURE");
  if (!file) return undefined;
  const f = Deno.openSync(file, { append: true, create: true, mode: 0o600 });
  return (chunk) => {
    let off = 0;
    while (off < chunk.length) off += f.writeSync(chunk.subarray(off));
  };
}

interface DatabaseFlags {
  database?: string;
  databasePasswordFile?: string;
}

/** --database (else $SECURECHAT_DATABASE) and the password file (else $SECURECHAT_DATABASE_PASSWORD_FILE). A
 * password written into a --database URL on the command line is visible to every user of the machine (ps):
 * it still works, with a warning that names the safer ways. */
async function storeConfig(flags: DatabaseFlags, fromCommandLine: boolean): Promise<StoreConfig> {
  const database = flags.database ?? env("SECURECHAT_DATABASE");
  if (!database) return {};
  if (fromCommandLine && flags.database) {
    try {
      if (new URL(flags.database).password) {
        console.error(
          `securechat: warning: the password in --database ${redactDatabaseUrl(flags.database)} is visible ` +
            "to other users of this machine; set SECURECHAT_DATABASE or use --database-password-file",
        );
      }
    } catch { /* parseDatabaseTarget reports a bad URL */ }
  }
  const file = flags.databasePasswordFile ?? env("SECURECHAT_DATABASE_PASSWORD_FILE");
  let databasePassword: string | undefined;
  if (file) {
    try {
      databasePassword = (await Deno.readTextFile(file)).replace(/\r?\n$/, "");
    } catch (e) {
      throw new CliError(
        `cannot read the database password file ${file}: ${e instanceof Error ? e.message : e}`,
      );
    }
  }
  return { database, databasePassword };
}

function setupError(e: unknown): never {
  if (e instanceof ServerSetupError) throw new CliError(e.message);
  throw e;
}

interface ServeFlags {
  data?: string;
  listen?: string;
  hostname: string[];
  roughtimeListen?: string;
  roughtime: boolean;
  inviteOnly?: boolean;
  certDays?: string;
  caAlgorithm: string;
  caPassphraseFile?: string;
  relay: boolean;
  relayListen?: string;
  relayAt?: string;
  caKeyFile?: string;
  caCertFile?: string;
  roughtimePublic?: string;
  proxyProtocol?: boolean;
  reachCheck: boolean;
  database?: string;
  databasePasswordFile?: string;
}

const DATABASE_HELP = "PostgreSQL URL postgres://USER@HOST:PORT/DB shared by several nodes " +
  "(or set SECURECHAT_DATABASE; default: SQLite in the data folder)";
const DATABASE_PASSWORD_HELP =
  "file holding the database password (or set SECURECHAT_DATABASE_PASSWORD_FILE)";

export function registerServeCommands(program: Command): void {
  const serve = program.command("serve")
    .description("run the phonebook (directory + CA + Roughtime server)")
    .option("--data <dir>", "data folder (default: $SECURECHAT_DATA or the platform's data folder)")
    .option("--listen <host:port>", `HTTPS address (default ${DEFAULT_LISTEN_HOST}:${DEFAULT_PORT})`)
    .option("--hostname <name>", "name or IP in the server's TLS certificate (repeatable)", collect, [])
    .option(
      "--roughtime-listen <host:port>",
      `Roughtime UDP address (default ${DEFAULT_ROUGHTIME.hostname}:${DEFAULT_ROUGHTIME.port})`,
    )
    .option("--no-roughtime", "do not run the Roughtime server")
    .option(
      "--relay-listen <host:port>",
      `relay TCP address for users who cannot reach each other directly (default the --listen host, port ${DEFAULT_RELAY_PORT})`,
    )
    .option("--no-relay", "do not relay (users behind NAT on both sides then cannot reach each other)")
    .option(
      "--relay-at <host:port>",
      "point users to a standalone `securechat relay` on another machine (instead of relaying here)",
    )
    .option(
      "--no-reach-check",
      "do not try users' published addresses back (peers then get every candidate unchecked)",
    )
    .option("--invite-only", "enrollment needs a token from `securechat serve invite`")
    .option("--cert-days <n>", "validity of user certificates in days (default 30)")
    .option("--ca-algorithm <alg>", "key type of a new CA: p256 or ed25519", "p256")
    .option(
      "--ca-passphrase-file <file>",
      "file holding the CA key passphrase (or set SECURECHAT_CA_PASSPHRASE): encrypts a new CA key, unlocks an existing one",
    )
    .option("--database <url>", DATABASE_HELP)
    .option("--database-password-file <file>", DATABASE_PASSWORD_HELP)
    .option(
      "--ca-key-file <file>",
      "the CA key outside the data folder, shared by every node (or set SECURECHAT_CA_KEY_FILE)",
    )
    .option("--ca-cert-file <file>", "its certificate (default: ca.pem next to the key file)")
    .option(
      "--roughtime-public <host:port>",
      "where clients reach this node's Roughtime server, as listed in /v1/info (default: the phonebook's host)",
    )
    .option(
      "--proxy-protocol",
      "connections come through a TCP load balancer sending the PROXY protocol v1 line (HAProxy send-proxy)",
    )
    .action(async (flags: ServeFlags) => {
      const dataDir = resolveDataDir(flags.data);
      const listen = parseHostPort(flags.listen ?? String(DEFAULT_PORT), DEFAULT_LISTEN_HOST);
      const roughtime = flags.roughtime === false
        ? false as const
        : flags.roughtimeListen
        ? parseHostPort(flags.roughtimeListen, listen.hostname)
        : { hostname: listen.hostname, port: DEFAULT_ROUGHTIME.port };
      let hostnames = flags.hostname.length > 0 ? flags.hostname : [...DEFAULT_HOSTNAMES];
      // The address the banner prints is always in the certificate, --hostname or not.
      if (!["0.0.0.0", "::"].includes(listen.hostname)) {
        if (!hostnames.includes(listen.hostname)) hostnames = [...hostnames, listen.hostname];
      }
      let certValidityDays: number | undefined;
      if (flags.certDays !== undefined) {
        certValidityDays = Number(flags.certDays);
        if (!Number.isInteger(certValidityDays) || certValidityDays < 1 || certValidityDays > 397) {
          throw new CliError("--cert-days must be an integer 1-397");
        }
      }
      if (flags.caAlgorithm !== "p256" && flags.caAlgorithm !== "ed25519") {
        throw new CliError("--ca-algorithm must be p256 or ed25519");
      }
      // Before the CA files are written: a busy port is said with what to do, not as a bind error afterwards.
      const relayAt = flags.relayAt ? parseHostPort(flags.relayAt, "") : undefined;
      if (relayAt && !relayAt.hostname) throw new CliError("--relay-at needs HOST:PORT");
      const relay = flags.relay === false || relayAt
        ? false as const
        : flags.relayListen
        ? parseHostPort(flags.relayListen, listen.hostname)
        : { hostname: listen.hostname, port: listen.port === 0 ? 0 : DEFAULT_RELAY_PORT };
      await checkPortsFree(listen, roughtime || null, relay || null);
      let roughtimePublic: { host: string | null; port: number } | undefined;
      if (flags.roughtimePublic) {
        const p = parseHostPort(flags.roughtimePublic, "");
        roughtimePublic = { host: p.hostname || null, port: p.port };
      }
      const dir = await startDirectoryServer({
        ...await storeConfig(flags, true),
        caKeyFile: flags.caKeyFile ?? env("SECURECHAT_CA_KEY_FILE"),
        caCertFile: flags.caCertFile ?? env("SECURECHAT_CA_CERT_FILE"),
        roughtimePublic,
        proxyProtocol: flags.proxyProtocol ?? false,
        dataDir,
        hostname: listen.hostname,
        port: listen.port,
        hostnames,
        roughtime,
        inviteOnly: flags.inviteOnly ?? false,
        certValidityDays,
        caPassphrase: await readPassphrase(flags.caPassphraseFile),
        caAlgorithm: flags.caAlgorithm,
        relay,
        relayAt: relayAt ? { host: relayAt.hostname, port: relayAt.port } : undefined,
        onRelayForward: relayCapture(),
        reachCheck: flags.reachCheck === false ? false : undefined,
      }).catch(setupError);
      const publicName = hostnames[0];
      const publicUrl = `https://${publicName.includes(":") ? `[${publicName}]` : publicName}:${dir.port}`;
      if (dir.createdCa) console.log(`Created a new CA in ${dataDir}`);
      console.log(`securechat directory listening on https://${listen.hostname}:${dir.port}`);
      console.log(`Directory data: ${dir.storeLocation}`);
      console.log(`CA fingerprint (SHA-256): ${groupHex(dir.caFingerprint)}`);
      if (dir.roughtime) {
        console.log(
          `Roughtime server on udp ${dir.roughtime.host}:${dir.roughtime.port}, key ${dir.roughtime.publicKey}`,
        );
      } else {
        console.log("Roughtime server: off");
      }
      console.log(
        dir.relay
          ? `Relay on tcp ${dir.relay.hostname}:${dir.relay.port}`
          : relayAt
          ? `Relay: users are pointed to ${flags.relayAt}`
          : "Relay: off",
      );
      console.log(`Reachability check: ${flags.reachCheck === false ? "off" : "on"}`);
      console.log(
        `Enrollment is ${flags.inviteOnly ? "by invitation only (securechat serve invite)" : "open"}.`,
      );
      console.log(
        `Users enroll with: securechat enroll --server ${publicUrl} --ca-fingerprint "${
          groupHex(dir.caFingerprint)
        }" --name NAME`,
      );
      await new Promise<void>((resolve) => {
        const done = () => {
          for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(sig, done);
          resolve();
        };
        for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, done);
      });
      await dir.close();
      console.log("securechat directory stopped");
    });

  serve.command("invite")
    .description("print a one-time enrollment token (for --invite-only)")
    .option("--data <dir>", "data folder of the directory")
    .option("--ttl-hours <h>", "hours before the token expires (default 168)")
    .option("--database <url>", DATABASE_HELP)
    .option("--database-password-file <file>", DATABASE_PASSWORD_HELP)
    .action(async (flags: { data?: string; ttlHours?: string } & DatabaseFlags) => {
      let ttlMs: number | undefined;
      if (flags.ttlHours !== undefined) {
        const h = Number(flags.ttlHours);
        if (!(h > 0 && h <= 24 * 90)) throw new CliError("--ttl-hours must be a number of hours up to 2160");
        ttlMs = h * 3600_000;
      }
      const dataDir = resolveDataDir(flags.data ?? serve.opts<ServeFlags>().data);
      const cfg = await storeConfig({ ...serve.opts<ServeFlags>(), ...definedOnly(flags) }, true);
      console.log(await createInviteToken(dataDir, ttlMs, cfg).catch(setupError));
    });

  serve.command("relay-cert")
    .description("issue the certificate of a standalone relay (`securechat relay` on another machine)")
    .option("--data <dir>", "data folder of the directory")
    .option("--hostname <name>", "name or IP the relay is reached at (repeatable)", collect, [])
    .requiredOption("--out <dir>", "folder to write relay.pem, relay-key.pem (0600) and ca.pem into")
    .option("--ca-passphrase-file <file>", "file holding the CA key passphrase (when it is encrypted)")
    .action(async (flags: { data?: string; hostname: string[]; out: string; caPassphraseFile?: string }) => {
      if (flags.hostname.length === 0) {
        throw new CliError("--hostname: the name or IP the relay is reached at");
      }
      const dataDir = resolveDataDir(flags.data ?? serve.opts<ServeFlags>().data);
      const r = await issueRelayCertificate(dataDir, flags.hostname, flags.out, {
        caPassphrase: await readPassphrase(flags.caPassphraseFile),
      }).catch(setupError);
      console.log(`wrote ${r.certPath}, ${r.keyPath} and ${r.caPath}: copy them to the relay's machine`);
    });

  serve.command("revoke")
    .description("revoke a user's current certificate (admin)")
    .argument("<name>", "the user")
    .option("--data <dir>", "data folder of the directory")
    .option("--release", "also free the name so that a new key can enroll it")
    .option("--database <url>", DATABASE_HELP)
    .option("--database-password-file <file>", DATABASE_PASSWORD_HELP)
    .action(async (name: string, flags: { data?: string; release?: boolean } & DatabaseFlags) => {
      try {
        canonicalUsername(name);
      } catch (e) {
        if (e instanceof UsernameError) throw new CliError(`bad name "${name}": ${e.message}`);
        throw e;
      }
      const dataDir = resolveDataDir(flags.data ?? serve.opts<ServeFlags>().data);
      const cfg = await storeConfig({ ...serve.opts<ServeFlags>(), ...definedOnly(flags) }, true);
      const r = await revokeUser(dataDir, name, { ...cfg, release: flags.release ?? false }).catch(
        setupError,
      );
      console.log(
        `revoked ${r.name}'s certificate ${r.serial}${r.released ? "; the name is free again" : ""}`,
      );
    });
}

interface RelayFlags {
  dir: string;
  phonebook: string;
  listen?: string;
  maxCircuits?: string;
}

/** `securechat relay`: a relay on a machine of its own (the folder written by `serve relay-cert`). */
export function registerRelayCommand(program: Command): void {
  program.command("relay")
    .description("relay for users who cannot reach each other directly (sees only ciphertext)")
    .requiredOption("--dir <dir>", "the folder written by `securechat serve relay-cert`")
    .requiredOption("--phonebook <url>", "the phonebook whose revocation list is followed, https://HOST:PORT")
    .option("--listen <host:port>", `TCP address (default 0.0.0.0:${DEFAULT_RELAY_PORT})`)
    .option("--max-circuits <n>", "relayed circuits one user may hold at once (default 16)")
    .action(async (flags: RelayFlags) => {
      const listen = parseHostPort(flags.listen ?? String(DEFAULT_RELAY_PORT), "0.0.0.0");
      let maxCircuitsPerUser: number | undefined;
      if (flags.maxCircuits !== undefined) {
        maxCircuitsPerUser = Number(flags.maxCircuits);
        if (!Number.isInteger(maxCircuitsPerUser) || maxCircuitsPerUser < 1 || maxCircuitsPerUser > 1000) {
          throw new CliError("--max-circuits must be an integer 1-1000");
        }
      }
      const read = async (f: string) => {
        try {
          return await Deno.readTextFile(join(flags.dir, f));
        } catch (e) {
          throw new CliError(`cannot read ${join(flags.dir, f)}: ${e instanceof Error ? e.message : e}`);
        }
      };
      const relay = await startStandaloneRelay({
        certPem: await read("relay.pem"),
        keyPem: await read("relay-key.pem"),
        caPem: await read("ca.pem"),
        phonebook: flags.phonebook,
        hostname: listen.hostname,
        port: listen.port,
        limits: maxCircuitsPerUser ? { maxCircuitsPerUser } : undefined,
        onForward: relayCapture(),
        log: (t) => console.error(`securechat relay: ${t}`),
      }).catch((e) => {
        if (e?.code === "EADDRINUSE") {
          throw new CliError(`port ${listen.port} is in use: pick another with --listen`);
        }
        throw e;
      });
      console.log(`securechat relay listening on tcp ${listen.hostname}:${relay.port}`);
      await new Promise<void>((resolve) => {
        const done = () => {
          for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(sig, done);
          resolve();
        };
        for (const sig of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(sig, done);
      });
      await relay.close();
      console.log("securechat relay stopped");
    });
}

/** The entries of `o` that are set (a subcommand's unset flag must not hide the parent's). */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
