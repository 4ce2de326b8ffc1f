/**
 * Key pairs for the CA and for users: generation, PKCS#8 PEM import/export (optionally passphrase-protected),
 * and writing secrets with mode 0600.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
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

/** PKCS#8 PEM of the private key; with a passphrase, an encrypted PKCS#8 block (AES-256-CBC, PBKDF2/scrypt
 * as chosen by the crypto library) that `openssl pkey` can also read. */
export async function exportPrivateKeyPem(kp: KeyPair, passphrase?: string): Promise<string> {
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", kp.privateKey));
  const ko = createPrivateKey({ key: der as unknown as Buffer, format: "der", type: "pkcs8" });
  if (passphrase !== undefined && passphrase !== "") {
    return ko.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase }) as string;
  }
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

/** Writes a secret file readable only by its owner. The file is created with mode 0600 (never world-readable,
 * not even for a moment) and chmod'ed again in case it already existed with looser bits. */
export async function writeSecretFile(path: string, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  await Deno.writeFile(path, bytes, { mode: 0o600 });
  if (Deno.build.os !== "windows") await Deno.chmod(path, 0o600);
}
