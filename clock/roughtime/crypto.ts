/**
 * Ed25519 and SHA-512 through node:crypto (2-5x faster than WebCrypto here). KeyObjects are cached because
 * importing a key costs about as much as a verification. The Merkle tree's hashes are node:crypto's too: a
 * hand-written SHA-512 (WebAssembly, tried) was 1.5x faster on a 1 KiB request but saved about 1 us of the
 * ~18 us a reply costs, not enough to carry our own hash in a security tool.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  randomBytes as nodeRandomBytes,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import { Buffer } from "node:buffer";
import { ED25519_PUBLIC_KEY_SIZE, ED25519_SEED_SIZE, SIGNATURE_SIZE } from "./constants.ts";
import { fail } from "./errors.ts";
import { concat } from "./wire.ts";

export function sha512(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha512");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

const PREFIXES = [new Uint8Array([0]), new Uint8Array([1])];
const prefixByte = (prefix: number) => PREFIXES[prefix] ?? new Uint8Array([prefix]);

/** SHA-512(prefix || a || b): the Merkle tree's leaf (prefix 0x00) and node (0x01) hashes, as a client
 * verifying a path computes them. */
export function sha512Prefixed(prefix: number, a: Uint8Array, b?: Uint8Array): Uint8Array {
  const h = createHash("sha512").update(prefixByte(prefix)).update(a);
  if (b) h.update(b);
  return new Uint8Array(h.digest());
}

/** Writes the first `size` bytes of SHA-512(prefix || src[from, to)) to `out` at `at` (`out` may be `src`:
 * the input is hashed before anything is written). The server's Merkle tree hashes leaves and nodes into
 * place with it. */
export function sha512PrefixedInto(
  prefix: number,
  src: Uint8Array,
  from: number,
  to: number,
  out: Uint8Array,
  at: number,
  size: number,
): void {
  if (from < 0 || to < from || to > src.length || size < 0 || size > 64 || at < 0 || at + size > out.length) {
    throw new RangeError("sha512PrefixedInto: range outside its buffer");
  }
  const d = createHash("sha512").update(prefixByte(prefix)).update(src.subarray(from, to)).digest();
  out.set(d.subarray(0, size), at);
}

export function randomBytes(n: number): Uint8Array {
  return new Uint8Array(nodeRandomBytes(n));
}

// PKCS#8 prefix for a raw Ed25519 seed (RFC 8410): SEQUENCE { 0, AlgorithmIdentifier(1.3.101.112), OCTET STRING }.
const PKCS8_ED25519_PREFIX = new Uint8Array(Buffer.from("302e020100300506032b657004220420", "hex"));

const MAX_CACHED_KEYS = 256;
const publicKeyCache = new Map<string, KeyObject>();
const privateKeyCache = new Map<string, KeyObject>();

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

function remember(cache: Map<string, KeyObject>, k: string, v: KeyObject): KeyObject {
  if (cache.size >= MAX_CACHED_KEYS) cache.delete(cache.keys().next().value as string);
  cache.set(k, v);
  return v;
}

function privateKey(seed: Uint8Array): KeyObject {
  if (seed.length !== ED25519_SEED_SIZE) {
    fail("BAD_ARGUMENT", `Ed25519 seed must be 32 bytes, got ${seed.length}`);
  }
  const k = hex(seed);
  return privateKeyCache.get(k) ??
    remember(
      privateKeyCache,
      k,
      createPrivateKey({
        key: Buffer.from(concat(PKCS8_ED25519_PREFIX, seed)),
        format: "der",
        type: "pkcs8",
      }),
    );
}

function publicKey(raw: Uint8Array): KeyObject {
  if (raw.length !== ED25519_PUBLIC_KEY_SIZE) {
    fail("BAD_ARGUMENT", `Ed25519 public key must be 32 bytes, got ${raw.length}`);
  }
  const k = hex(raw);
  const cached = publicKeyCache.get(k);
  if (cached) return cached;
  const x = Buffer.from(raw).toString("base64url");
  return remember(
    publicKeyCache,
    k,
    createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" }),
  );
}

export function publicKeyFromSeed(seed: Uint8Array): Uint8Array {
  const jwk = createPublicKey(privateKey(seed)).export({ format: "jwk" });
  if (typeof jwk.x !== "string") fail("BAD_ARGUMENT", "could not derive the Ed25519 public key");
  return new Uint8Array(Buffer.from(jwk.x, "base64url"));
}

/** Ed25519 signature over context || message (the Roughtime signing rule). */
export function signWithContext(seed: Uint8Array, context: Uint8Array, message: Uint8Array): Uint8Array {
  return new Uint8Array(nodeSign(null, concat(context, message), privateKey(seed)));
}

/** False for a bad signature; an invalid public key (not a curve point) also yields false. */
export function verifyWithContext(
  raw: Uint8Array,
  context: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (signature.length !== SIGNATURE_SIZE) return false;
  let key: KeyObject;
  try {
    key = publicKey(raw);
  } catch {
    return false;
  }
  return nodeVerify(null, concat(context, message), key, signature);
}
