/**
 * The CA and the server's TLS identity on disk, in the data folder: created on first start, loaded after.
 * The CA key is written with mode 0600 (optionally encrypted with a passphrase) and refused if others can
 * read it.
 */
import { dirname, join } from "node:path";
import {
  type CaMaterial,
  checkCaCertificate,
  createCaCertificate,
  exportPrivateKeyPem,
  fingerprintOf,
  generateKeyPair,
  importPrivateKeyPem,
  issueServerCertificate,
  type KeyAlgorithm,
  pemToDer,
  restrictDirectory,
  writeSecretFile,
  x509,
} from "../pki/mod.ts";
import { FILES } from "./limits.ts";
import { ServerSetupError } from "./errors.ts";

export interface LoadedCa {
  ca: CaMaterial;
  fingerprint: string;
  created: boolean;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Creates the data folder (mode 0700) if needed, and makes an existing one owner-only. */
export async function ensureDataDir(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await Deno.stat(dir);
  if (!st.isDirectory) throw new ServerSetupError("BAD_DATA_DIR", `${dir} is not a directory`);
  await restrictDirectory(dir);
}

async function readSecret(path: string): Promise<string> {
  const st = await Deno.stat(path);
  if (Deno.build.os !== "windows" && st.mode !== null && (st.mode & 0o077) !== 0) {
    throw new ServerSetupError(
      "CA_KEY",
      `${path} is readable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
    );
  }
  return await Deno.readTextFile(path);
}

export async function loadOrCreateCa(
  dataDir: string,
  opts: {
    passphrase?: string;
    algorithm?: KeyAlgorithm;
    name?: string;
    /** Where the CA key is, when not in the data folder (a key shared by several nodes). */
    keyFile?: string;
    /** Where the CA certificate is; default: next to keyFile, else in the data folder. */
    certFile?: string;
  } = {},
): Promise<LoadedCa> {
  const keyPath = opts.keyFile ?? join(dataDir, FILES.caKey);
  const certPath = opts.certFile ?? join(opts.keyFile ? dirname(opts.keyFile) : dataDir, FILES.caCert);
  const haveCert = await exists(certPath);
  const haveKey = await exists(keyPath);
  if (haveCert !== haveKey) {
    throw new ServerSetupError(
      "CA_KEY",
      `${haveCert ? keyPath : certPath} is missing while ${
        haveCert ? certPath : keyPath
      } exists; refusing to ` +
        "make a new CA over a half-present one",
    );
  }
  if (haveCert) {
    const certPem = await Deno.readTextFile(certPath);
    let keys;
    try {
      keys = await importPrivateKeyPem(await readSecret(keyPath), opts.passphrase);
    } catch (e) {
      if (e instanceof ServerSetupError) throw e;
      throw new ServerSetupError("CA_KEY", `cannot load the CA key: ${e instanceof Error ? e.message : e}`);
    }
    let cert: x509.X509Certificate;
    try {
      cert = new x509.X509Certificate(pemToDer(certPem, "CERTIFICATE"));
      // The CA file is held to the template's profile and its validity now: a hand-edited or forged file must
      // not start a phonebook whose every answer its own clients would then refuse.
      const now = Date.now();
      await checkCaCertificate(cert, { earliestMs: now, latestMs: now });
    } catch (e) {
      throw new ServerSetupError(
        "CA_CERT",
        `${certPath} is not a usable CA certificate: ${(e as Error).message}`,
      );
    }
    const spkiCert = new Uint8Array(cert.publicKey.rawData);
    const spkiKey = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
    if (spkiCert.length !== spkiKey.length || spkiCert.some((b, i) => b !== spkiKey[i])) {
      throw new ServerSetupError("CA_KEY", `${keyPath} does not match ${certPath}`);
    }
    return { ca: { cert, certPem, keys }, fingerprint: fingerprintOf(certPem), created: false };
  }
  const keys = await generateKeyPair(opts.algorithm ?? "p256");
  const cert = await createCaCertificate(keys, { name: opts.name });
  const certPem = cert.toString("pem") + "\n";
  // Key first: a crash in between leaves a key without a certificate, which the check above refuses loudly.
  await writeSecretFile(keyPath, await exportPrivateKeyPem(keys, opts.passphrase));
  await Deno.writeTextFile(certPath, certPem);
  return { ca: { cert, certPem, keys }, fingerprint: fingerprintOf(certPem), created: true };
}

/** The server's TLS certificate for `hostnames`, re-issued by the CA at every start so it always matches the
 * current --hostname flags; its key is kept across starts. */
export async function loadServerIdentity(
  dataDir: string,
  ca: CaMaterial,
  hostnames: string[],
  nowMs = Date.now(),
): Promise<{ certPem: string; keyPem: string }> {
  const keyPath = join(dataDir, FILES.serverKey);
  let keyPem: string;
  if (await exists(keyPath)) {
    keyPem = await readSecret(keyPath);
  } else {
    keyPem = await exportPrivateKeyPem(await generateKeyPair("p256"));
    await writeSecretFile(keyPath, keyPem);
  }
  const keys = await importPrivateKeyPem(keyPem);
  const cert = await issueServerCertificate(ca, hostnames, keys, nowMs);
  const certPem = cert.toString("pem") + "\n";
  await Deno.writeTextFile(join(dataDir, FILES.serverCert), certPem);
  return { certPem, keyPem };
}
