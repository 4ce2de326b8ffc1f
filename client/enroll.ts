/**
 * Enrollment: get a certificate for a key pair made on this device. The CA certificate is fetched first over
 * an unverified connection (we have nothing to verify it with yet) and accepted only if its SHA-256
 * fingerprint matches the one the user was given, or the user confirms it (trust on first use, like ssh).
 * From then on every connection to the directory is verified against that CA.
 */
import { CodedError } from "../coded_error.ts";
import https from "node:https";
import {
  canonicalUsername,
  checkCaCertificate,
  createCsr,
  derToPem,
  exportPrivateKeyPem,
  fingerprintOf,
  generateKeyPair,
  importPrivateKeyPem,
  type KeyAlgorithm,
  normalizeFingerprint,
  pemToDer,
  PkiError,
  spkiOf,
  UsernameError,
  verifyPeerCertificate,
  x509,
} from "../pki/mod.ts";
import { DirectoryClient, DirectoryError, type IssuedCertificate } from "./directory_client.ts";
import {
  type HomeConfig,
  type HomeState,
  isEnrolled,
  loadHome,
  writeCertificate,
  writeHome,
} from "./home.ts";

export type EnrollErrorCode =
  | "BAD_USERNAME"
  | "BAD_SERVER_URL"
  | "BAD_FINGERPRINT"
  | "ALREADY_ENROLLED"
  | "WRONG_FINGERPRINT"
  | "NOT_CONFIRMED"
  | "UNREACHABLE"
  | "NAME_TAKEN"
  | "BAD_TOKEN"
  | "REFUSED"
  | "BAD_CERTIFICATE";

export class EnrollError extends CodedError<EnrollErrorCode> {}

const CA_FETCH_TIMEOUT_MS = 15_000;
const MAX_CA_PEM_BYTES = 64 * 1024;

function parseServerUrl(server: string): URL {
  let u: URL;
  try {
    u = new URL(server);
  } catch {
    throw new EnrollError("BAD_SERVER_URL", `"${server}" is not a URL (expected https://HOST:PORT)`);
  }
  if (u.protocol !== "https:") {
    throw new EnrollError("BAD_SERVER_URL", "the server URL must start with https://");
  }
  return u;
}

/** GET /v1/ca.pem without verifying the server (the answer is judged by its fingerprint instead). */
export function fetchCaCertificateUnverified(server: string): Promise<string> {
  const url = new URL("/v1/ca.pem", parseServerUrl(server));
  return new Promise((resolve, reject) => {
    const unreachable = (msg: string) =>
      reject(new EnrollError("UNREACHABLE", `cannot reach the directory at ${server}: ${msg}`));
    const req = https.request(url, { rejectUnauthorized: false, timeout: CA_FETCH_TIMEOUT_MS }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        unreachable(`GET /v1/ca.pem answered ${res.statusCode}`);
        return;
      }
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        text += c;
        if (text.length > MAX_CA_PEM_BYTES) {
          req.destroy();
          unreachable("CA certificate answer is too large");
        }
      });
      res.on("end", () => resolve(text));
      res.on("error", (e: Error) => unreachable(e.message));
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", (e: Error) => unreachable(e.message));
    req.end();
  });
}

/** A fingerprint as every securechat screen shows it: groups of four hex digits. */
export function groupFingerprint(hex: string): string {
  return (hex.replace(/[:\s]/g, "").toLowerCase().match(/.{1,4}/g) ?? []).join(" ");
}

/** What enrolling asked for, so a refusal can say what to do next. */
interface EnrollContext {
  name?: string;
  tokenGiven?: boolean;
}

function mapDirectoryError(e: unknown, ctx: EnrollContext = {}): never {
  if (e instanceof DirectoryError) {
    switch (e.code) {
      case "UNREACHABLE":
        throw new EnrollError("UNREACHABLE", e.message);
      case "BAD_SERVER_CERTIFICATE":
        throw new EnrollError("BAD_CERTIFICATE", e.message);
      case "NAME_TAKEN":
        throw new EnrollError(
          "NAME_TAKEN",
          `the name ${ctx.name ? `"${ctx.name}" ` : ""}is taken on this phonebook: pick another name`,
        );
      case "BAD_TOKEN":
        throw new EnrollError(
          "BAD_TOKEN",
          ctx.tokenGiven === false
            ? "invitation refused: this phonebook is invite-only; ask its operator for a token " +
              "(securechat serve invite) and give it (--token TOKEN, or at the invite token question)"
            : `invitation refused: ${e.message}; ask the phonebook's operator for a new token`,
        );
      case "BAD_USERNAME":
        throw new EnrollError("BAD_USERNAME", e.message);
      default:
        throw new EnrollError("REFUSED", `the directory refused (${e.code}): ${e.message}`);
    }
  }
  throw e;
}

/** Checks that the issued certificate is for us: from our CA, our name, our key, and the template's rules.
 * Resolves with the checked certificate alone, re-encoded as PEM (nothing else from the answer is kept). */
async function checkIssued(
  issued: IssuedCertificate,
  caPem: string,
  name: string,
  publicKey: CryptoKey,
): Promise<string> {
  let der: Uint8Array;
  try {
    der = pemToDer(issued.certPem, "CERTIFICATE");
  } catch {
    throw new EnrollError("BAD_CERTIFICATE", "the directory sent something that is not a certificate");
  }
  const now = Date.now();
  try {
    await verifyPeerCertificate({
      certDer: der,
      caCertPem: caPem,
      expectedName: name,
      time: { earliestMs: now, latestMs: now },
    });
  } catch (e) {
    throw new EnrollError(
      "BAD_CERTIFICATE",
      `the issued certificate does not check out: ${(e as Error).message}`,
    );
  }
  const cert = new x509.X509Certificate(new Uint8Array(der));
  const got = new Uint8Array(cert.publicKey.rawData);
  const want = await spkiOf(publicKey);
  if (got.length !== want.length || got.some((b, i) => b !== want[i])) {
    throw new EnrollError("BAD_CERTIFICATE", "the issued certificate is not for our key");
  }
  return derToPem(der, "CERTIFICATE");
}

async function roughtimeConfig(client: DirectoryClient, server: URL): Promise<HomeConfig["roughtime"]> {
  const info = await client.info().catch(mapDirectoryError);
  if (!info.roughtime) return [];
  return [{
    name: "directory",
    host: server.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: info.roughtime.port,
    publicKey: info.roughtime.publicKey,
  }];
}

export async function enroll(opts: {
  server: string;
  caFingerprint?: string;
  name: string;
  token?: string;
  home: string;
  confirmFingerprint?: (fingerprint: string) => Promise<boolean>;
  algorithm?: KeyAlgorithm;
}): Promise<HomeState> {
  let name: string;
  try {
    name = canonicalUsername(opts.name);
  } catch (e) {
    if (e instanceof UsernameError) {
      throw new EnrollError("BAD_USERNAME", `bad name "${opts.name}": ${e.message}`);
    }
    throw e;
  }
  const serverUrl = parseServerUrl(opts.server);
  let expected: string | null = null;
  if (opts.caFingerprint !== undefined) {
    try {
      expected = normalizeFingerprint(opts.caFingerprint);
    } catch (e) {
      if (e instanceof PkiError) throw new EnrollError("BAD_FINGERPRINT", e.message);
      throw e;
    }
  }
  if (await isEnrolled(opts.home)) {
    throw new EnrollError(
      "ALREADY_ENROLLED",
      `${opts.home} already holds an enrollment (use --renew, or another --home)`,
    );
  }

  const caText = await fetchCaCertificateUnverified(opts.server);
  let fp: string;
  let caPem: string;
  try {
    // Only the one block that was fingerprinted is kept, re-encoded: text around it (a second certificate
    // our PEM reader skips but TLS would trust) must never be pinned along with it.
    const caDer = pemToDer(caText, "CERTIFICATE");
    fp = fingerprintOf(caDer);
    caPem = derToPem(caDer, "CERTIFICATE");
  } catch {
    throw new EnrollError("BAD_CERTIFICATE", "the directory's CA certificate is not a PEM certificate");
  }
  if (expected !== null) {
    if (fp !== expected) {
      throw new EnrollError(
        "WRONG_FINGERPRINT",
        `the directory's CA fingerprint is ${groupFingerprint(fp)}, not the expected ` +
          `${groupFingerprint(expected)}: refusing (wrong server, or someone in between); check the ` +
          "fingerprint you were given and the address",
      );
    }
  } else {
    if (!opts.confirmFingerprint) {
      throw new EnrollError(
        "NOT_CONFIRMED",
        `CA fingerprint ${fp} was not confirmed (pass --ca-fingerprint)`,
      );
    }
    if (!(await opts.confirmFingerprint(fp))) {
      throw new EnrollError("NOT_CONFIRMED", "CA fingerprint not confirmed: nothing was changed");
    }
  }

  try {
    // Pinned only if it is a CA as our template makes it, valid now: a fingerprint proves whose it is, not
    // that it is fit to be trusted.
    const now = Date.now();
    await checkCaCertificate(new x509.X509Certificate(pemToDer(caPem, "CERTIFICATE")), {
      earliestMs: now,
      latestMs: now,
    });
  } catch (e) {
    throw new EnrollError(
      "BAD_CERTIFICATE",
      `the directory's CA certificate is unfit: ${(e as Error).message}`,
    );
  }
  const keys = await generateKeyPair(opts.algorithm ?? "p256");
  const csr = await createCsr(name, keys);
  const client = new DirectoryClient({ url: opts.server, caPem });
  try {
    const issued = await client.enroll(name, csr, opts.token).catch((e) =>
      mapDirectoryError(e, { name, tokenGiven: opts.token !== undefined && opts.token !== "" })
    );
    const certPem = await checkIssued(issued, caPem, name, keys.publicKey);
    const roughtime = await roughtimeConfig(client, serverUrl);
    await writeHome(opts.home, {
      keyPem: await exportPrivateKeyPem(keys),
      certPem,
      caPem,
      config: { server: serverUrl.origin, name, caFingerprint: fp, roughtime },
    });
  } finally {
    client.close();
  }
  return await loadHome(opts.home);
}

/** Renews the certificate with the current key, authenticated by the current certificate. */
export async function renewEnrollment(home: string): Promise<HomeState> {
  const state = await loadHome(home);
  const keys = await importPrivateKeyPem(state.keyPem);
  const csr = await createCsr(state.name, keys);
  const client = new DirectoryClient({
    url: state.server,
    caPem: state.caPem,
    certPem: state.certPem,
    keyPem: state.keyPem,
  });
  try {
    const issued = await client.renew(csr).catch(mapDirectoryError);
    await writeCertificate(home, await checkIssued(issued, state.caPem, state.name, keys.publicKey));
  } finally {
    client.close();
  }
  return await loadHome(home);
}

/** Revokes the current certificate. The files stay (they say who we were), but the certificate is dead. */
export async function revokeEnrollment(home: string): Promise<{ name: string; serial: string }> {
  const state = await loadHome(home);
  const client = new DirectoryClient({
    url: state.server,
    caPem: state.caPem,
    certPem: state.certPem,
    keyPem: state.keyPem,
  });
  try {
    const r = await client.revoke().catch(mapDirectoryError);
    return { name: r.name, serial: r.revoked };
  } finally {
    client.close();
  }
}
