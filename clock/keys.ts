/**
 * Long-term Roughtime keys: a 32-byte Ed25519 seed (RFC 8032 section 5.1.5 key generation is exactly a random
 * seed), stored as a small JSON file with mode 0600.
 */
import { ED25519_SEED_SIZE } from "./roughtime/constants.ts";
import { publicKeyFromSeed, randomBytes } from "./roughtime/crypto.ts";
import { RoughtimeError } from "./roughtime/errors.ts";
import { fromBase64, toBase64, toHex } from "./roughtime/encoding.ts";

export { publicKeyFromSeed };

const KEY_FILE_TYPE = "securechat-roughtime-longterm-ed25519";

export function generateLongTermSeed(): Uint8Array {
  return randomBytes(ED25519_SEED_SIZE);
}

interface KeyFile {
  type: string;
  seed: string;
  publicKey: string;
}

function parseKeyFile(path: string, text: string): { seed: Uint8Array; publicKey: Uint8Array } {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new RoughtimeError("BAD_KEY_FILE", `${path} is not a Roughtime key file (not JSON)`);
  }
  const f = data as Partial<KeyFile>;
  if (typeof data !== "object" || data === null || f.type !== KEY_FILE_TYPE || typeof f.seed !== "string") {
    throw new RoughtimeError("BAD_KEY_FILE", `${path} is not a Roughtime key file`);
  }
  let seed: Uint8Array;
  try {
    seed = fromBase64(f.seed);
  } catch {
    throw new RoughtimeError("BAD_KEY_FILE", `${path}: seed is not base64`);
  }
  if (seed.length !== ED25519_SEED_SIZE) {
    throw new RoughtimeError("BAD_KEY_FILE", `${path}: seed is not 32 bytes`);
  }
  const publicKey = publicKeyFromSeed(seed);
  if (typeof f.publicKey === "string" && f.publicKey !== toBase64(publicKey)) {
    throw new RoughtimeError("BAD_KEY_FILE", `${path}: publicKey does not match the seed`);
  }
  return { seed, publicKey };
}

/** Writes a new key file; fails if `path` exists (never overwrites a key). Mode 0600 from creation on. */
export async function writeNewLongTermKey(
  path: string,
): Promise<{ seed: Uint8Array; publicKey: Uint8Array }> {
  const seed = generateLongTermSeed();
  const publicKey = publicKeyFromSeed(seed);
  const body: KeyFile = { type: KEY_FILE_TYPE, seed: toBase64(seed), publicKey: toBase64(publicKey) };
  // Written to a private temporary file, then hard-linked into place: link() fails if the name exists, so a
  // key is never overwritten, and a concurrent reader never sees a half-written file.
  const tmp = `${path}.tmp-${toHex(randomBytes(8))}`;
  try {
    await Deno.writeTextFile(tmp, JSON.stringify(body, null, 2) + "\n", { mode: 0o600, createNew: true });
    // The mode given at creation passes through the umask; chmod makes it exactly 0600.
    await Deno.chmod(tmp, 0o600);
    await Deno.link(tmp, path);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  return { seed, publicKey };
}

/** Loads the key at `path`, creating it (mode 0600) when missing. Refuses a file others can read. */
export async function loadOrCreateLongTermKey(
  path: string,
): Promise<{ seed: Uint8Array; publicKey: Uint8Array }> {
  let text: string;
  try {
    const st = await Deno.stat(path);
    if (st.mode !== null && (st.mode & 0o077) !== 0) {
      throw new RoughtimeError(
        "BAD_KEY_FILE",
        `${path} is readable by other users (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
      );
    }
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      try {
        return await writeNewLongTermKey(path);
      } catch (e2) {
        // Another process created it between our stat and our write: read theirs.
        if (e2 instanceof Deno.errors.AlreadyExists) return loadOrCreateLongTermKey(path);
        throw e2;
      }
    }
    throw e;
  }
  return parseKeyFile(path, text);
}
