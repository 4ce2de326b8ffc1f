/**
 * Key pairs for the CA and for users: generation, PKCS#8 PEM import/export (optionally passphrase-protected),
 * and writing secrets with mode 0600.
 */
import {
  createCipheriv,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  pbkdf2Sync,
  randomBytes,
} from "node:crypto";
import { Buffer } from "node:buffer";
import { derToPem } from "./encoding.ts";
import { PkiError } from "./errors.ts";

export type KeyAlgorithm = "p256" | "ed25519";

export interface KeyPair {
  algorithm: KeyAlgorithm;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
}

const GEN_PARAMS: Record<KeyAlgorithm, EcKeyGenParams | Algorithm> = {
  p256: { name: "ECDSA", namedCurve: "P-256" } as EcKeyGenParams,
  ed25519: { name: "Ed25519" },
};

/** The signature algorithm a key of this kind signs certificates, CSRs and CRLs with. */
export function signingAlgorithm(alg: KeyAlgorithm): Algorithm | EcdsaParams {
  return alg === "p256" ? { name: "ECDSA", hash: "SHA-256" } as EcdsaParams : { name: "Ed25519" };
}

export async function generateKeyPair(alg: KeyAlgorithm = "p256"): Promise<KeyPair> {
  if (alg !== "p256" && alg !== "ed25519") throw new PkiError("BAD_KEY", `unknown key algorithm ${alg}`);
  const kp = await crypto.subtle.generateKey(GEN_PARAMS[alg], true, ["sign", "verify"]) as CryptoKeyPair;
  return { algorithm: alg, privateKey: kp.privateKey, publicKey: kp.publicKey };
}

/** PBKDF2-HMAC-SHA256 work factor for passphrase-protected keys (OWASP 2023 recommendation). The crypto
 * library's own encrypted export uses 2,048, which lets a copied CA key file be guessed ~300 times faster. */
export const PBKDF2_ITERATIONS = 600_000;
const PBKDF2_SALT_BYTES = 16;
const AES_CBC_IV_BYTES = 16;
// DER of the algorithm identifiers in an encrypted PKCS#8 (RFC 8018 A.2, A.4, B.2.5; RFC 3565).
const OID_PBES2 = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const OID_PBKDF2 = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
const ALG_HMAC_SHA256 = [0x30, 0x0c, 0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09, 0x05, 0x00];
const OID_AES256_CBC = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/** One DER TLV. */
function der(tag: number, ...parts: (number[] | Uint8Array)[]): number[] {
  const body = parts.flatMap((p) => Array.from(p));
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return [tag, ...len, ...body];
}

function derInteger(n: number): number[] {
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  if (bytes.length === 0 || bytes[0] & 0x80) bytes.unshift(0);
  return der(0x02, bytes);
}

/** EncryptedPrivateKeyInfo (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC) of a PKCS#8 DER, as OpenSSL writes it
 * with `-v2 aes-256-cbc -v2prf hmacWithSHA256 -iter N`, so `openssl pkey` and createPrivateKey read it. */
function encryptPkcs8(pkcs8: Uint8Array, passphrase: string): Uint8Array {
  const salt = randomBytes(PBKDF2_SALT_BYTES);
  const iv = randomBytes(AES_CBC_IV_BYTES);
  const key = pbkdf2Sync(passphrase, salt, PBKDF2_ITERATIONS, 32, "sha256");
  const cipher = createCipheriv("aes-256-cbc", key, iv);
  const encrypted = new Uint8Array(Buffer.concat([cipher.update(pkcs8), cipher.final()]));
  const pbkdf2Params = der(0x30, der(0x04, salt), derInteger(PBKDF2_ITERATIONS), ALG_HMAC_SHA256);
  const pbes2Params = der(
    0x30,
    der(0x30, OID_PBKDF2, pbkdf2Params),
    der(0x30, OID_AES256_CBC, der(0x04, iv)),
  );
  return new Uint8Array(der(0x30, der(0x30, OID_PBES2, pbes2Params), der(0x04, encrypted)));
}

/** PKCS#8 PEM of the private key; with a passphrase, an encrypted PKCS#8 block (PBES2: PBKDF2-HMAC-SHA256
 * with PBKDF2_ITERATIONS, AES-256-CBC) that `openssl pkey` can also read. */
export async function exportPrivateKeyPem(kp: KeyPair, passphrase?: string): Promise<string> {
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", kp.privateKey));
  if (passphrase !== undefined && passphrase !== "") {
    return derToPem(encryptPkcs8(pkcs8, passphrase), "ENCRYPTED PRIVATE KEY");
  }
  const ko = createPrivateKey({ key: pkcs8 as unknown as Buffer, format: "der", type: "pkcs8" });
  return ko.export({ type: "pkcs8", format: "pem" }) as string;
}

/** Loads a PKCS#8 PEM private key (encrypted ones need `passphrase`) as a WebCrypto key pair. */
export async function importPrivateKeyPem(pem: string, passphrase?: string): Promise<KeyPair> {
  let ko: KeyObject;
  try {
    ko = createPrivateKey(passphrase ? { key: pem, format: "pem", passphrase } : { key: pem, format: "pem" });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (pem.includes("ENCRYPTED PRIVATE KEY")) {
      throw new PkiError("BAD_PASSPHRASE", "cannot decrypt the private key: wrong or missing passphrase");
    }
    throw new PkiError("BAD_KEY", `cannot read the private key: ${msg}`);
  }
  return await keyPairFromKeyObject(ko);
}

async function keyPairFromKeyObject(ko: KeyObject): Promise<KeyPair> {
  const type = ko.asymmetricKeyType;
  let alg: KeyAlgorithm;
  if (type === "ed25519") alg = "ed25519";
  else if (type === "ec" && ko.asymmetricKeyDetails?.namedCurve === "prime256v1") alg = "p256";
  else throw new PkiError("BAD_KEY", `unsupported key type ${type} (P-256 or Ed25519 expected)`);
  const pkcs8 = ko.export({ type: "pkcs8", format: "der" }) as Uint8Array;
  const spki = createPublicKey(ko).export({ type: "spki", format: "der" }) as Uint8Array;
  const params = alg === "p256" ? { name: "ECDSA", namedCurve: "P-256" } : { name: "Ed25519" };
  const privateKey = await crypto.subtle.importKey("pkcs8", new Uint8Array(pkcs8), params, true, ["sign"]);
  const publicKey = await crypto.subtle.importKey("spki", new Uint8Array(spki), params, true, ["verify"]);
  return { algorithm: alg, privateKey, publicKey };
}

/** SubjectPublicKeyInfo DER of a public key. */
export async function spkiOf(publicKey: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
}

/** Writes a secret file readable only by its owner. The bytes go into a new file created exclusively with
 * mode 0600 beside `path`, which then replaces `path` by rename. Writing in place would leak the secret to
 * anyone who opened an older, looser file at `path` (their handle reads the new bytes), and would follow a
 * symbolic link planted at `path`; exclusive creation never follows a link, and rename replaces the link
 * itself. The file is flushed before the rename so a crash leaves the old file or the whole new one. */
export async function writeSecretFile(path: string, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      // The mode given at creation passes through the umask; chmod makes it exactly 0600.
      if (Deno.build.os !== "windows") await Deno.chmod(tmp, 0o600);
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {/* never created, or already renamed */});
    throw e;
  }
}

/** Makes an existing folder owner-only (0700): one that was created earlier with looser bits would let other
 * users list it, and a group-writable one would let them swap files in it. No-op on Windows. */
export async function restrictDirectory(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  const st = await Deno.stat(dir);
  if (st.mode !== null && (st.mode & 0o077) !== 0) await Deno.chmod(dir, 0o700);
}
