/** Every limit and default of the directory in one place. */

export { PHONEBOOK_API_VERSION as API_VERSION } from "../contract/mod.ts";
export const DEFAULT_PORT = 10040;
export const DEFAULT_LISTEN_HOST = "127.0.0.1";
export const DEFAULT_ROUGHTIME = { hostname: "127.0.0.1", port: 2002 } as const;
export const DEFAULT_HOSTNAMES = ["localhost", "127.0.0.1"];

/** Request bodies are small JSON documents (a CSR is under 1 KiB); refuse anything bigger before reading it. */
export const MAX_BODY_BYTES = 16 * 1024;
/** A request's headers must be complete this long after the connection opens (or the previous response). */
export const HEADERS_TIMEOUT_MS = 10_000;
/** Once headers are in, the body must be complete within this time, however slowly it trickles. */
export const BODY_TIMEOUT_MS = 10_000;
/** After an error answer that closes the connection (413, 408), what the client still sends is read and
 * dropped for at most this long and this many bytes, so that it can read the answer (see lingerClose). */
export const LINGER_MS = 2_000;
export const LINGER_MAX_BYTES = 4 * 1024 * 1024;
/** An idle keep-alive connection is closed after this long. */
export const IDLE_TIMEOUT_MS = 30_000;
export const MAX_CONNECTIONS = 1024;
/** Open connections from one source (an IPv4 address or an IPv6 /64, see rateLimitKey): one client cannot
 * take every slot, however slowly it talks. A client needs a few (the directory client pools 4). */
export const MAX_CONNECTIONS_PER_SOURCE = 128;

/** Per source address token bucket. Enrollment signs a certificate, so it costs more than a look-up. The
 * burst lets a whole office behind one NAT address (or a test suite on loopback) enroll 40 users at once. */
export const RATE_PER_SECOND = 50;
export const RATE_BURST = 200;
export const ENROLL_COST = 5;
/** Issuing grows the directory for good: each certificate is stored and, once revoked or superseded, stays
 * on the CRL every peer downloads until it expires. So enrollments and renewals also draw on a much slower
 * bucket per source (an IPv4 address or an IPv6 /64): 40 at once, then one every minute and a half. */
export const ENROLL_PER_HOUR = 40;
export const ENROLL_BURST = 40;
/** Certificates one name may be issued in 24 hours (enrollment included): a user renewing in a loop would
 * otherwise add a superseded serial to the CRL with every call. */
export const RENEWALS_PER_DAY = 10;
/** How long after its notAfter a certificate may still renew itself (POST /v1/renew only, same key, not
 * revoked, still the user's current one): 60 days, twice a user certificate's default lifetime. Clients
 * renew at two thirds of the lifetime, so a certificate lapses only when its owner is away: one who leaves
 * just before renewing (day 20 of 30) and stays away five weeks comes back 25 days after it lapsed, well
 * inside. Longer would let a key nobody used for months come back without an admin; the key's holder could
 * renew during validity anyway, so the grace gives a thief of the key nothing the owner's revocation does not
 * take away again. Every other call still needs a certificate valid now. */
export const RENEW_GRACE_MS = 60 * 24 * 3600 * 1000;
/** Buckets of addresses not seen for this long are forgotten (bounded memory under address churn). */
export const RATE_BUCKET_IDLE_MS = 60_000;
export const RATE_MAX_BUCKETS = 50_000;

export const PRESENCE_MIN_TTL_S = 10;
export const PRESENCE_MAX_TTL_S = 3600;
export const LIST_DEFAULT_LIMIT = 50;
export const LIST_MAX_LIMIT = 200;

export const INVITE_TOKEN_BYTES = 24;
export const INVITE_TOKEN_TTL_MS = 7 * 24 * 3600 * 1000;
/** The CRL is re-signed at least this often even without new revocations (it carries nextUpdate). */
export const CRL_REFRESH_MS = 3600 * 1000;

/** Files in the data folder. */
export const FILES = {
  db: "directory.db",
  caCert: "ca.pem",
  caKey: "ca-key.pem",
  serverCert: "server.pem",
  serverKey: "server-key.pem",
  roughtimeKey: "roughtime-key.json",
} as const;

/** A node announces its Roughtime server this often; /v1/info lists servers announced within the stale
 * window (a node that stopped drops out), read from the store at most once per cache period per node. */
export const TIME_SERVER_ANNOUNCE_MS = 60_000;
export const TIME_SERVER_STALE_MS = 5 * 60_000;
export const TIME_SERVER_CACHE_MS = 5_000;

/** The reachability check (reach_probe.ts, docs/protocol.md "The check"). One probe: TCP connect plus TLS
 * handshake within this time. */
export const REACH_TIMEOUT_MS = 2_000;
/** Probes running at once on one node, and probes waiting for a slot (beyond: not tried this round). */
export const REACH_CONCURRENCY = 16;
export const REACH_QUEUE_MAX = 256;
/** Check rounds one user may cause: 4 at once, then one a minute. A round is asked for only when the
 * candidate set changed or its last check is older than REACH_RECHECK_MS, so a user who stays put uses none;
 * a spent budget just leaves the candidates unchecked until the next refresh asks again. */
export const REACH_ROUND_BURST = 4;
export const REACH_ROUND_PER_SECOND = 1 / 60;
/** Probes to one destination address over all users (each carries only a ClientHello): a crowd of
 * enrolled users naming one victim gets 32 connections to it, then one every 2 s. */
export const REACH_HOST_BURST = 32;
export const REACH_HOST_PER_SECOND = 0.5;
/** A check result stays good this long; then the next refresh of the same candidates checks again. */
export const REACH_RECHECK_MS = 10 * 60_000;
