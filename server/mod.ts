/**
 * `securechat serve` as a library: one process running the directory's HTTPS JSON API, the CA, and the
 * Roughtime server from clock/ (whose public key the directory publishes in /v1/info).
 */
import { join } from "node:path";
import { loadOrCreateLongTermKey, type RunningRoughtimeServer, startRoughtimeServer } from "../clock/mod.ts";
import {
  exportPrivateKeyPem,
  generateKeyPair,
  issueServerCertificate,
  type KeyAlgorithm,
  pemToDer,
  RELAY_CN,
  toBase64,
  writeSecretFile,
  x509,
} from "../pki/mod.ts";
import { ensureDataDir, loadOrCreateCa, loadServerIdentity } from "./ca_state.ts";
import { adminRevoke, DirectoryService } from "./directory.ts";
import { ServerSetupError } from "./errors.ts";
import { type HttpLimits, startHttpServer } from "./http.ts";
import {
  DEFAULT_HOSTNAMES,
  DEFAULT_LISTEN_HOST,
  DEFAULT_PORT,
  DEFAULT_ROUGHTIME,
  FILES,
  INVITE_TOKEN_BYTES,
  INVITE_TOKEN_TTL_MS,
  TIME_SERVER_ANNOUNCE_MS,
} from "./limits.ts";
import type { DirectoryStore } from "./store.ts";
import { openDirectoryStore, type StoreConfig } from "./store_open.ts";
import { SchemaError } from "./migrations.ts";
import { type RelayLimits, type RunningRelay, startRelay } from "./relay.ts";
import { ReachProber, type ReachProberOptions } from "./reach_probe.ts";
import { DEFAULT_RELAY_PORT } from "../contract/mod.ts";

export { ApiError, type ApiErrorCode, ServerSetupError } from "./errors.ts";
export { type HttpLimits } from "./http.ts";
export { API_VERSION, DEFAULT_PORT } from "./limits.ts";
export { DEFAULT_RELAY_LIMITS, type RelayLimits, type RelayStats, type RunningRelay } from "./relay.ts";
export { DEFAULT_RELAY_PORT };
export { type StandaloneRelayOptions, startStandaloneRelay } from "./relay_standalone.ts";
export { type ProbeOutcome, type ProbeResult, type ReachProberOptions } from "./reach_probe.ts";

/** The reachability check's settings a deployment (or a test) may change; the CA and the phonebook's own
 * ports come from the server itself. */
export type ReachCheckOptions = Omit<ReachProberOptions, "caCertPem" | "ownPorts" | "now" | "takeRound">;

/** Issues a standalone relay's certificate (server authentication for `hostnames`, marked as a relay's so
 * clients never take it for the directory's) and writes it, its key (0600) and the CA certificate to
 * `outDir`. Needs the CA key (and its passphrase when it is encrypted). */
export async function issueRelayCertificate(
  dataDir: string,
  hostnames: string[],
  outDir: string,
  opts: { caPassphrase?: string } = {},
): Promise<{ certPath: string; keyPath: string; caPath: string }> {
  try {
    await Deno.stat(join(dataDir, FILES.caCert));
  } catch {
    throw new ServerSetupError(
      "BAD_DATA_DIR",
      `${dataDir} holds no directory (start \`securechat serve\` first)`,
    );
  }
  const { ca } = await loadOrCreateCa(dataDir, { passphrase: opts.caPassphrase });
  const keys = await generateKeyPair("p256");
  const cert = await issueServerCertificate(ca, hostnames, keys, Date.now(), RELAY_CN);
  await Deno.mkdir(outDir, { recursive: true, mode: 0o700 });
  const certPath = join(outDir, "relay.pem");
  const keyPath = join(outDir, "relay-key.pem");
  const caPath = join(outDir, "ca.pem");
  await writeSecretFile(keyPath, await exportPrivateKeyPem(keys));
  await Deno.writeTextFile(certPath, cert.toString("pem") + "\n");
  await Deno.writeTextFile(caPath, ca.certPem);
  return { certPath, keyPath, caPath };
}
export { type StoreConfig } from "./store_open.ts";
export { SCHEMA_VERSION, SchemaError } from "./migrations.ts";
export { redactDatabaseUrl } from "./database_url.ts";

export interface DirectoryServerOptions extends StoreConfig {
  /** This node's own files: its TLS key, its Roughtime key, and (without `database`) the SQLite file and
   * the CA. */
  dataDir: string;
  /** Listen host, default 127.0.0.1. */
  hostname?: string;
  /** 0 = free port; default 10040. */
  port?: number;
  /** Names/IPs in the server's TLS cert; default ["localhost","127.0.0.1"]. */
  hostnames?: string[];
  /** Default {127.0.0.1, 2002}; tests pass port 0. */
  roughtime?: { hostname: string; port: number } | false;
  inviteOnly?: boolean;
  certValidityDays?: number;
  /** Protects the CA key file (encrypted PKCS#8); needed again at every start. */
  caPassphrase?: string;
  /** Key type of a CA created by this start (an existing CA keeps its own); default "p256". */
  caAlgorithm?: KeyAlgorithm;
  /** The CA key outside the data folder, shared by every node of one phonebook. */
  caKeyFile?: string;
  /** Its certificate; default: ca.pem next to caKeyFile. */
  caCertFile?: string;
  /** The address clients reach this node's Roughtime server at, as listed in /v1/info for every node; default:
   * the directory's own host name with the listening port. */
  roughtimePublic?: { host: string | null; port: number };
  /** Connections come through a TCP load balancer that sends the PROXY protocol v1 line (HAProxy
   * `send-proxy`); connections without it are closed. */
  proxyProtocol?: boolean;
  /** Overrides of the HTTP limits (tests make them small). */
  limits?: Partial<HttpLimits>;
  /** Where unexpected internal errors are reported; default console.error. */
  onError?: (e: unknown) => void;
  /** The relay beside the phonebook (same host): default on, port DEFAULT_RELAY_PORT (any free port when
   * `port` is 0); false for none. */
  relay?: { hostname?: string; port: number; limits?: Partial<RelayLimits> } | false;
  /** A standalone relay (`securechat relay` on another machine) to point users to, instead of our own. */
  relayAt?: { host: string; port: number };
  /** The phonebook tries each published candidate back and lists those that answer as the user
   * (docs/protocol.md "The check"); default on, false for off (`serve --no-reach-check`). */
  reachCheck?: ReachCheckOptions | false;
  /** Test hook: every chunk the relay forwards (tests search it for plaintext). */
  onRelayForward?: (chunk: Uint8Array) => void;
  /** How often the server's own TLS certificate is checked for renewal. Default SERVER_CERT_CHECK_MS. */
  serverCertCheckMs?: number;
  /** The clock the server certificate's renewal is judged on and issued from (tests move it). */
  now?: () => number;
}

/** The server's own certificate renews itself like a user's: at two thirds of its lifetime, same key. */
export const SERVER_CERT_RENEW_FRACTION = 2 / 3;
/** Checked hourly (the lifetime is SERVER_CERT_VALIDITY_DAYS; a timer that long would overflow). */
export const SERVER_CERT_CHECK_MS = 3600_000;

/** When the server certificate in `certPem` is due for renewal (Unix ms). */
function serverCertRenewAt(certPem: string): number {
  const c = new x509.X509Certificate(pemToDer(certPem, "CERTIFICATE"));
  const nb = c.notBefore.getTime();
  return nb + Math.floor((c.notAfter.getTime() - nb) * SERVER_CERT_RENEW_FRACTION);
}

export interface RunningDirectory {
  /** https://127.0.0.1:PORT (the listen host, or 127.0.0.1 when listening on all addresses). */
  url: string;
  port: number;
  caCertPem: string;
  caFingerprint: string;
  roughtime: { host: string; port: number; publicKey: string } | null;
  /** The relay beside the phonebook, or null. */
  relay: RunningRelay | null;
  /** Where the directory's data is (file path or database URL without password). */
  storeLocation: string;
  /** True when this start created the CA. */
  createdCa: boolean;
  /** Resolves when every reachability check under way on this node has stored its result (tests). */
  reachChecksSettled(): Promise<void>;
  close(): Promise<void>;
}

export async function startDirectoryServer(opts: DirectoryServerOptions): Promise<RunningDirectory> {
  await ensureDataDir(opts.dataDir);
  // The store first: a database this code cannot use (unreachable, newer schema) stops the start before
  // anything is created on disk.
  const store = await openStore(opts.dataDir, opts);
  let ca, fingerprint, created, identity;
  const hostnames = opts.hostnames && opts.hostnames.length > 0 ? opts.hostnames : DEFAULT_HOSTNAMES;
  let rt: RunningRoughtimeServer | null = null;
  try {
    ({ ca, fingerprint, created } = await loadOrCreateCa(opts.dataDir, {
      passphrase: opts.caPassphrase,
      algorithm: opts.caAlgorithm,
      keyFile: opts.caKeyFile,
      certFile: opts.caCertFile,
    }));
    identity = await loadServerIdentity(opts.dataDir, ca, hostnames);
    const rtOpt = opts.roughtime === undefined ? DEFAULT_ROUGHTIME : opts.roughtime;
    if (rtOpt !== false) {
      const key = await loadOrCreateLongTermKey(join(opts.dataDir, FILES.roughtimeKey));
      rt = await startRoughtimeServer({ hostname: rtOpt.hostname, port: rtOpt.port, longTermSeed: key.seed });
    }
  } catch (e) {
    await store.close();
    throw e;
  }
  const roughtime = rt ? { host: rt.hostname, port: rt.port, publicKey: toBase64(rt.publicKey) } : null;

  let announcer: ReturnType<typeof setInterval> | undefined;
  try {
    // A node with another CA than the one the database was started with must not issue into it.
    await store.bindCa(fingerprint);
    if (rt) {
      const announced = {
        host: opts.roughtimePublic?.host ?? null,
        port: opts.roughtimePublic?.port ?? rt.port,
        publicKey: toBase64(rt.publicKey),
      };
      await store.announceTimeServer(announced, Date.now());
      announcer = setInterval(() => {
        store.announceTimeServer(announced, Date.now()).catch((e) => (opts.onError ?? console.error)(e));
      }, TIME_SERVER_ANNOUNCE_MS);
    }
  } catch (e) {
    await store.close();
    await rt?.close();
    throw e;
  }
  const listenHost = opts.hostname ?? DEFAULT_LISTEN_HOST;
  let relay: RunningRelay | null = null;
  // Built before the service (which lists who is connected to it); it judges certificates through the
  // service, set right after.
  const judge: { service: DirectoryService | null } = { service: null };
  if (opts.relay !== false && !opts.relayAt) {
    try {
      relay = await startRelay({
        certPem: identity.certPem,
        keyPem: identity.keyPem,
        caPem: ca.certPem,
        authenticate: (der) => judge.service!.authenticate(der),
        hostname: opts.relay?.hostname ?? listenHost,
        // A phonebook on any free port (tests, the demo) gets a relay on any free port too.
        port: opts.relay?.port ?? (opts.port === 0 ? 0 : DEFAULT_RELAY_PORT),
        limits: opts.relay ? opts.relay.limits : undefined,
        onForward: opts.onRelayForward,
      });
    } catch (e) {
      clearInterval(announcer);
      await store.close();
      await rt?.close();
      throw e;
    }
  }
  // The phonebook's own ports, never probed on its own addresses (set as each listener is bound).
  const own: { http: number | null } = { http: opts.port || null };
  const prober = opts.reachCheck === false ? null : new ReachProber({
    // Each user's round budget is shared by every node (the per-destination one is per node: it is taken
    // for every candidate, too often for a database write).
    takeRound: async (name, nowMs, spec) => await store.takeBucket(`reach:${name}`, 1, nowMs, spec) === 0,
    ...opts.reachCheck,
    caCertPem: ca.certPem,
    ownPorts: () =>
      [own.http, relay?.port, rt?.port, opts.roughtimePublic?.port].filter((p): p is number =>
        typeof p === "number" && p > 0
      ),
  });
  const service = new DirectoryService({
    prober,
    onError: opts.onError,
    store,
    ca,
    caFingerprint: fingerprint,
    inviteOnly: opts.inviteOnly ?? false,
    certValidityDays: opts.certValidityDays,
    roughtime,
    relay: relay
      ? {
        // Where users reach it: its listen host, or the first name in our certificate when on all addresses.
        host: ["0.0.0.0", "::"].includes(relay.hostname)
          ? (opts.hostnames?.length ? opts.hostnames : DEFAULT_HOSTNAMES)[0]
          : relay.hostname,
        port: relay.port,
        isConnected: (n) => relay.isConnected(n),
      }
      : opts.relayAt
      ? { host: opts.relayAt.host, port: opts.relayAt.port, isConnected: () => false }
      : null,
  });
  judge.service = service;
  let http;
  try {
    http = await startHttpServer({
      service,
      certPem: identity.certPem,
      keyPem: identity.keyPem,
      hostname: listenHost,
      port: opts.port ?? DEFAULT_PORT,
      limits: opts.limits,
      proxyProtocol: opts.proxyProtocol,
      onError: opts.onError ?? ((e) => console.error("securechat serve: internal error:", e)),
    });
  } catch (e) {
    await service.close();
    await relay?.close();
    clearInterval(announcer);
    await store.close();
    await rt?.close();
    throw e;
  }
  own.http = http.port;
  const urlHost = listenHost === "0.0.0.0" || listenHost === "::" ? "127.0.0.1" : listenHost;
  let closed = false;
  // The server certificate renews itself (re-issued by the CA for the kept key, written to server.pem, served
  // on new connections); a failure is reported and tried again at the next check.
  const now = opts.now ?? Date.now;
  let serving = identity.certPem;
  let renewing = false;
  const certTimer = setInterval(async () => {
    if (renewing || closed || now() < serverCertRenewAt(serving)) return;
    renewing = true;
    try {
      const next = await loadServerIdentity(opts.dataDir, ca, hostnames, now());
      if (closed) return;
      http.setCertificate(next.certPem, next.keyPem);
      relay?.setCertificate(next.certPem, next.keyPem);
      serving = next.certPem;
    } catch (e) {
      (opts.onError ?? console.error)(e);
    } finally {
      renewing = false;
    }
  }, opts.serverCertCheckMs ?? SERVER_CERT_CHECK_MS);
  return {
    url: `https://${urlHost.includes(":") ? `[${urlHost}]` : urlHost}:${http.port}`,
    port: http.port,
    caCertPem: ca.certPem,
    caFingerprint: fingerprint,
    roughtime,
    relay,
    storeLocation: store.location,
    createdCa: created,
    reachChecksSettled: () => service.checksSettled(),
    close: async () => {
      if (closed) return;
      closed = true;
      await relay?.close();
      clearInterval(certTimer);
      clearInterval(announcer);
      await http.close();
      // Checks under way end before the store they write to closes.
      await service.close();
      await rt?.close();
      await store.close();
    },
  };
}

/** Opens the configured store, turning a schema or connection problem into a ServerSetupError. */
async function openStore(dataDir: string, cfg: StoreConfig, mustExist = false): Promise<DirectoryStore> {
  try {
    return await openDirectoryStore(dataDir, cfg, { mustExist });
  } catch (e) {
    if (e instanceof SchemaError) throw new ServerSetupError("DATABASE", e.message);
    throw e;
  }
}

/** The store of a directory that has been started at least once (admin commands). */
async function openExistingStore(dataDir: string, cfg: StoreConfig): Promise<DirectoryStore> {
  if (cfg.database) {
    const store = await openStore(dataDir, cfg, true);
    if (await store.boundCa() === null) {
      await store.close();
      throw new ServerSetupError(
        "BAD_DATA_DIR",
        `${store.location} holds no directory (start \`securechat serve\` on it first)`,
      );
    }
    return store;
  }
  try {
    await Deno.stat(join(dataDir, FILES.db));
  } catch {
    throw new ServerSetupError(
      "BAD_DATA_DIR",
      `${dataDir} holds no directory (start \`securechat serve\` first)`,
    );
  }
  return await openStore(dataDir, cfg);
}

/** A one-time enrollment token (base64url, 192 bits), valid for INVITE_TOKEN_TTL_MS. Only its hash is stored. */
export async function createInviteToken(
  dataDir: string,
  ttlMs = INVITE_TOKEN_TTL_MS,
  cfg: StoreConfig = {},
): Promise<string> {
  const store = await openExistingStore(dataDir, cfg);
  try {
    const bytes = crypto.getRandomValues(new Uint8Array(INVITE_TOKEN_BYTES));
    const token = toBase64(bytes).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
    await store.addToken(token, Date.now(), ttlMs);
    return token;
  } finally {
    await store.close();
  }
}

/** Admin revocation of a user's current certificate (works while the server runs: the CRL follows). With
 * `release`, the name is freed so a new key can enroll it. Throws ServerSetupError("NO_SUCH_USER"). */
export async function revokeUser(
  dataDir: string,
  name: string,
  opts: { release?: boolean } & StoreConfig = {},
): Promise<{ name: string; serial: string; released: boolean }> {
  const store = await openExistingStore(dataDir, opts);
  try {
    const r = await adminRevoke(store, name, opts.release ?? false);
    if (!r) throw new ServerSetupError("NO_SUCH_USER", `no user named "${name}"`);
    return r;
  } finally {
    await store.close();
  }
}

export { DEFAULT_LISTEN_HOST };
