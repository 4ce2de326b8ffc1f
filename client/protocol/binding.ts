/**
 * What the hello signs and what a time proof is bound to. The hello signature covers both TLS Finished
 * messages, so it proves possession of the certificate's private key on THIS connection: a relay that
 * terminates two TLS connections sees different Finished values on each and cannot forward a signature.
 * We check it ourselves rather than trusting the TLS stack's CertificateVerify check, because the TLS layer
 * runs with rejectUnauthorized:false (certificate validity is judged on trusted time, not the local clock).
 */
import crypto from "node:crypto";
import { Buffer } from "node:buffer";
import type { HelloRole, MsgFrame } from "./frames.ts";
import { HELLO_SIGNATURE_CONTEXT, TIME_PROOF_CONTEXT } from "./constants.ts";

const enc = new TextEncoder();

export interface HelloBinding {
  role: HelloRole;
  from: string;
  to: string;
  fromFp: string;
  toFp: string;
  /** The TLS server's and client's Finished messages (identical on both ends of one connection). */
  serverFinished: Uint8Array;
  clientFinished: Uint8Array;
}

/** The bytes signed in a hello: a context string and every field, JSON-encoded as one array (unambiguous). */
export function helloSignedData(b: HelloBinding): Uint8Array {
  return enc.encode(JSON.stringify([
    HELLO_SIGNATURE_CONTEXT,
    b.role,
    b.from,
    b.to,
    b.fromFp,
    b.toFp,
    Buffer.from(b.serverFinished).toString("hex"),
    Buffer.from(b.clientFinished).toString("hex"),
  ]));
}

/** Ed25519 keys sign the data itself; EC keys sign its SHA-256. */
function digestFor(key: crypto.KeyObject): string | null {
  return key.asymmetricKeyType === "ed25519" || key.asymmetricKeyType === "ed448" ? null : "sha256";
}

/** Signs with a PKCS#8 PEM private key; returns base64. */
export function signHello(privateKey: crypto.KeyObject, data: Uint8Array): string {
  return crypto.sign(digestFor(privateKey), data, privateKey).toString("base64");
}

/** True when `sig` (base64) is a signature over `data` by the public key of the DER certificate. */
export function verifyHelloSignature(certDer: Uint8Array, data: Uint8Array, sig: string): boolean {
  try {
    const publicKey = new crypto.X509Certificate(Buffer.from(certDer)).publicKey;
    return crypto.verify(digestFor(publicKey), data, publicKey, Buffer.from(sig, "base64"));
  } catch {
    return false;
  }
}

/** The data a message's Roughtime proof is bound to: SHA-256 over a context and every field that decides the
 * message's content and lifetime, so a proof cannot be moved to another message or another lifetime. */
export function timeProofData(
  m: Pick<MsgFrame, "id" | "from" | "to" | "text" | "sentAt" | "ttlMs" | "ttlMode">,
) {
  const json = JSON.stringify([
    TIME_PROOF_CONTEXT,
    m.id,
    m.from,
    m.to,
    m.text,
    m.sentAt,
    m.ttlMs ?? null,
    m.ttlMode ?? null,
  ]);
  return new Uint8Array(crypto.createHash("sha256").update(json, "utf8").digest());
}
