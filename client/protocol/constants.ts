/**
 * Every constant and limit of the peer frame protocol (docs/protocol.md), in one place. Version 1.
 */

/** Protocol version carried in the hello; a peer offering another version is refused (VERSION). */
export const PROTOCOL_VERSION = 1;

/** Frames are a 4-byte big-endian length, then that many bytes of UTF-8 JSON. */
export const LENGTH_PREFIX_BYTES = 4;
/** Largest frame body. A larger (or zero) length closes the session before any buffer is allocated. */
export const MAX_FRAME_BYTES = 64 * 1024;
/** Largest message text, in UTF-8 bytes. */
export const MAX_TEXT_BYTES = 16 * 1024;
/** Message ids: 32 lowercase hex characters, the sender's choice (ours: send time, then 80 random bits). */
export const MESSAGE_ID_PATTERN = /^[0-9a-f]{32}$/;
/** Shortest and longest lifetime of a self-destructing message. */
export const MIN_TTL_MS = 1_000;
export const MAX_TTL_MS = 30 * 24 * 3600_000;
/** Hard upper bound on how long an "after read" message may wait unread, counted from its (proof-bounded)
 * send time: past it, both copies die even if it was never displayed. A sender of a vanishing message must
 * not have it lie on two disks for ever because the receiver never opened it. Seven days: long enough for a
 * reader away over a long weekend or a week's holiday (the usual reason a message waits), short enough that
 * an abandoned device or account does not keep it for months. Independent of the lifetime (up to
 * MAX_TTL_MS), which still counts from the first display once the message is read in time. */
export const MAX_UNREAD_MS = 7 * 24 * 3600_000;
/** Deepest JSON nesting accepted in a frame (the time proof is the deepest legitimate object: 2). */
export const MAX_JSON_DEPTH = 4;

/** Received bytes not yet handled; above this the socket stops reading (backpressure). At least one frame. */
export const READ_HIGH_WATER_BYTES = 2 * 64 * 1024;
/** The hello must arrive this soon after the TLS handshake. */
export const HELLO_TIMEOUT_MS = 10_000;
/** A session with no complete frame for this long is closed (a byte-a-second peer never completes one). */
export const IDLE_TIMEOUT_MS = 60_000;
/** Keep-alive: a ping after this long without sending anything. */
export const KEEPALIVE_INTERVAL_MS = 20_000;
/** Sessions one peer name may hold at once, counted from the moment its certificate names it (before the
 * hello), so simultaneous connections cannot all slip in while still authenticating. */
export const MAX_SESSIONS_PER_PEER = 4;
/** Connections the listener holds at once (in handshake or open), counted from accept, before TLS. Beyond
 * it a new connection is closed at once. Kept well under the usual 1,024 file descriptors a process may
 * open (and under 256 with room for the store, dials and time servers). */
export const MAX_CONNECTIONS = 128;
/** Connections not yet authenticated (TLS handshake or waiting for the hello), counted from accept. When
 * full, the oldest pending one is dropped to make room: a slow or silent one ages out first. */
export const MAX_PENDING = 64;
/** Pending connections from one remote IP address. A household behind one NAT shares an address, so a full
 * address drops its own oldest pending connection rather than refusing the new one: a host holding 16 idle
 * connections open cannot lock out a neighbour whose handshake completes before 16 newer ones arrive. An
 * honest client needs one connection per peer; 16 covers several devices starting at once. */
export const MAX_PENDING_PER_ADDRESS = 16;
/** The TLS handshake must complete this soon after accept (Node's default is 120 s). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 5_000;
/** How often an idle listener checks that it still accepts (an accept loop can die on EMFILE and stay
 * "listening"); on a failed check it listens again on the same port. */
export const LISTENER_CHECK_INTERVAL_MS = 5_000;
/** How long the check waits for its own connection to be accepted. */
export const LISTENER_CHECK_TIMEOUT_MS = 2_000;
/** Connections dropped before TLS are reported as one summary per this interval, not one line each. */
export const DROP_REPORT_INTERVAL_MS = 10_000;
/** Bytes queued for writing before the writer waits for 'drain'. */
export const WRITE_HIGH_WATER_BYTES = 256 * 1024;

/** Domain separation for the hello signature (docs/protocol.md, "Hello"). */
export const HELLO_SIGNATURE_CONTEXT = "securechat hello v1";
/** Domain separation for the data a time proof is bound to. */
export const TIME_PROOF_CONTEXT = "securechat message time v1";

export const FRAME_TYPES = [
  "hello",
  "msg",
  "ack",
  "acks",
  "refuse",
  "read",
  "typing",
  "ping",
  "pong",
  "error",
  "bye",
] as const;
export type FrameType = typeof FRAME_TYPES[number];

/** Per-peer inbox limits (client/peer_quota.ts), enforced before a message is stored; past one the session
 * ends with `error QUOTA_EXCEEDED` or `error RATE_LIMITED`, nothing past the last receipt is acknowledged, and
 * the sender keeps those messages and tries again later. Bytes of message bodies from one peer stored unread:
 * a flood piles up unread, so reading (or expiry) makes room again. 4 MiB is thousands of ordinary messages
 * and 256 of the largest (16 KiB). */
export const PEER_UNREAD_BYTES = 4 * 1024 * 1024;
/** Messages one peer may send at once (a token bucket per peer name, across its sessions)... A client back
 * online after a long absence flushes its whole outbox at once; 6,000 covers a day of a busy bot. */
export const PEER_MESSAGE_BURST = 6_000;
/** ...refilled at this many messages a minute (10 a second, far above any person typing). */
export const PEER_MESSAGES_PER_MINUTE = 600;

/** Message requests (client/requests.ts): messages from a peer we never wrote to nor accepted are held as a
 * request, at most this many per such stranger (more are refused with `error QUOTA_EXCEEDED`)... */
export const REQUEST_MAX_MESSAGES = 5;
/** ...and from at most this many strangers at once (a new stranger beyond it is refused with `error
 * REQUESTS_FULL`, and the user is told once per time the requests are full)... */
export const REQUEST_MAX_STRANGERS = 50;
/** ...each for at most this long: a request not accepted within 7 days of its first message is deleted (as
 * an "after read" message never displayed dies after MAX_UNREAD_MS), so strangers that fill every slot (50
 * enrolled sock-puppets) deny others for a bounded time, not until the user declines them... */
export const REQUEST_EXPIRY_MS = 7 * 24 * 3600_000;
/** ...and a stranger whose request was declined or expired cannot open a new one for this long (refused with
 * `error QUOTA_EXCEEDED`): without it the same puppets would fill the freed slots again within seconds. */
export const REQUEST_COOLDOWN_MS = 7 * 24 * 3600_000;
/** How often the engine looks for expired requests (and once at start). */
export const REQUEST_SWEEP_INTERVAL_MS = 3600_000;

/** Optional features a hello may list in `caps` (docs/protocol.md, "Capabilities"): a frame a peer of an
 * older version would not understand is sent only to a peer whose hello listed its capability. "acks": the
 * peer takes `acks` frames (many delivery receipts in one frame). */
export const CAP_ACKS = "acks";
/** What this version lists in its hello. */
export const OUR_CAPS: readonly string[] = [CAP_ACKS];
/** Most capabilities a hello may list, and the form of one (unknown ones are ignored). */
export const MAX_CAPS = 16;
export const CAP_PATTERN = /^[a-z0-9-]{1,32}$/;
/** Most ids in one `acks` frame (1,024 ids of 32 hex digits: about 35 KiB, under MAX_FRAME_BYTES). */
export const MAX_ACK_IDS = 1024;
