/**
 * Roughtime protocol constants: tags, version numbers, signature contexts and the limits we enforce.
 * Every number the codec, client and server compare against lives here (RFC 10049, drafts 12-19, Google).
 */

/** Tags as little-endian uint32 values (RFC 10049 section 12.2; PAD\xff from Google-Roughtime). */
export const TAG = {
  SIG: 0x00474953,
  VER: 0x00524556,
  SRV: 0x00565253,
  NONC: 0x434e4f4e,
  DELE: 0x454c4544,
  TYPE: 0x45505954,
  PATH: 0x48544150,
  RADI: 0x49444152,
  PUBK: 0x4b425550,
  MIDP: 0x5044494d,
  SREP: 0x50455253,
  VERS: 0x53524556,
  MINT: 0x544e494d,
  ROOT: 0x544f4f52,
  CERT: 0x54524543,
  MAXT: 0x5458414d,
  INDX: 0x58444e49,
  ZZZZ: 0x5a5a5a5a,
  PAD_GOOGLE: 0xff444150,
} as const;

/** VER values. Drafts 12-19 all use 0x8000000c on the wire; the RFC uses 1. */
export const VERSION_RFC = 0x00000001;
export const VERSION_DRAFT = 0x8000000c;
/** Versions our server speaks, ascending as VERS requires. */
export const SERVER_VERSIONS: readonly number[] = [VERSION_RFC, VERSION_DRAFT];
/** Preference when several versions are mutually supported: the RFC first. */
export const VERSION_PREFERENCE: readonly number[] = [VERSION_RFC, VERSION_DRAFT];

/** "ROUGHTIM" as the uint64 0x4d49544847554f52 little-endian: the IETF packet header. */
export const PACKET_MAGIC = new Uint8Array([0x52, 0x4f, 0x55, 0x47, 0x48, 0x54, 0x49, 0x4d]);
export const PACKET_HEADER_SIZE = 12;

const enc = new TextEncoder();
/** Signature contexts, each with its terminating zero byte (RFC 10049 section 5.2.1). */
export const CONTEXT_RESPONSE = enc.encode("RoughTime v1 response signature\0");
export const CONTEXT_DELEGATION_IETF = enc.encode("RoughTime v1 delegation signature\0");
export const CONTEXT_DELEGATION_GOOGLE = enc.encode("RoughTime v1 delegation signature--\0");

/** Sizes. */
export const ED25519_PUBLIC_KEY_SIZE = 32;
export const ED25519_SEED_SIZE = 32;
export const SIGNATURE_SIZE = 64;
export const NONCE_SIZE_IETF = 32;
export const NONCE_SIZE_GOOGLE = 64;
export const HASH_SIZE_IETF = 32;
export const HASH_SIZE_GOOGLE = 64;
export const SRV_PREFIX = 0xff;
export const MERKLE_LEAF_PREFIX = 0x00;
export const MERKLE_NODE_PREFIX = 0x01;
export const TYPE_REQUEST = 0;
export const TYPE_RESPONSE = 1;

/** Requests are padded to this many bytes (whole datagram), and the server drops anything smaller:
 * that, together with "reply never larger than request", is the anti-amplification rule. */
export const REQUEST_SIZE = 1024;
export const MIN_REQUEST_SIZE = 1024;
/** The largest datagram the server reads (a 1472-byte UDP payload fits an Ethernet MTU). */
export const MAX_REQUEST_SIZE = 1472;
/** RFC 10049: at most 32 versions in VER/VERS and at most 32 hashes in PATH. */
export const MAX_VERSIONS = 32;
export const MAX_PATH_HASHES = 32;
/** Largest batch our server signs at once: 64 leaves = 6 PATH hashes, so even a Google reply
 * (360 + 6*64 bytes) stays well under the 1024-byte request. */
export const MAX_BATCH_SIZE = 64;

/** A radius above this is treated as absurd and the reply refused (a server on an unsynced clock was seen
 * sending 0xffffffff); roughtime.md also says to drop replies with RADI over 10 s when combining. */
export const MAX_RADIUS_MS = 10_000;
export const DEFAULT_RADIUS_SECONDS = 3;

/** Default port (IANA assignment pending; 2002 is what every public server uses). */
export const DEFAULT_PORT = 2002;

/** Bounds on what the codec decodes: a message (nested ones included) and a whole IETF packet. */
export const MAX_MESSAGE_SIZE = 65_536;
export const MAX_PACKET_SIZE = 2 * MAX_REQUEST_SIZE;

/** Client timing: one query's whole budget, first resend, and the draft's backoff factor between resends. */
export const DEFAULT_QUERY_TIMEOUT_MS = 1500;
export const INITIAL_RETRY_MS = 250;
export const BACKOFF_FACTOR = 1.5;

/** Server: lifetime of one online key's delegation (replaced halfway through), how far MINT is set before
 * the key's creation (so a clock stepped back a little stays inside the window), and the bound on datagrams
 * queued between two flushes (a flood costs bounded memory; the excess is dropped). */
export const DELEGATION_VALIDITY_MS = 24 * 3600_000;
export const DELEGATION_BACKDATE_MS = 3600_000;
export const MAX_PENDING_REQUESTS = 4096;

/** TCP transport (RFC 10049 framing): idle connections are closed, and their number is capped. */
export const TCP_IDLE_TIMEOUT_MS = 10_000;
export const TCP_MAX_CONNECTIONS = 256;

/** Drafts 01-11, verified read-only by legacy.ts. */
export const LEGACY_VERSION_FIRST = 0x80000001;
export const LEGACY_VERSION_LAST = 0x8000000b;
