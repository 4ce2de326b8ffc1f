/** Tunable limits of peer sessions (defaults from the protocol constants; tests shrink the timeouts). */
import {
  DROP_REPORT_INTERVAL_MS,
  HELLO_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  KEEPALIVE_INTERVAL_MS,
  LISTENER_CHECK_INTERVAL_MS,
  LISTENER_CHECK_TIMEOUT_MS,
  MAX_CONNECTIONS,
  MAX_FRAME_BYTES,
  MAX_PENDING,
  MAX_PENDING_PER_ADDRESS,
  MAX_SESSIONS_PER_PEER,
  READ_HIGH_WATER_BYTES,
  TLS_HANDSHAKE_TIMEOUT_MS,
  WRITE_HIGH_WATER_BYTES,
} from "../protocol/constants.ts";

export interface SessionLimits {
  maxFrameBytes: number;
  readHighWaterBytes: number;
  helloTimeoutMs: number;
  idleTimeoutMs: number;
  keepaliveIntervalMs: number;
  maxSessionsPerPeer: number;
  maxPendingPerAddress: number;
  maxPending: number;
  maxConnections: number;
  handshakeTimeoutMs: number;
  listenerCheckIntervalMs: number;
  listenerCheckTimeoutMs: number;
  dropReportIntervalMs: number;
  writeHighWaterBytes: number;
}

export const DEFAULT_LIMITS: SessionLimits = {
  maxFrameBytes: MAX_FRAME_BYTES,
  readHighWaterBytes: READ_HIGH_WATER_BYTES,
  helloTimeoutMs: HELLO_TIMEOUT_MS,
  idleTimeoutMs: IDLE_TIMEOUT_MS,
  keepaliveIntervalMs: KEEPALIVE_INTERVAL_MS,
  maxSessionsPerPeer: MAX_SESSIONS_PER_PEER,
  maxPendingPerAddress: MAX_PENDING_PER_ADDRESS,
  maxPending: MAX_PENDING,
  maxConnections: MAX_CONNECTIONS,
  handshakeTimeoutMs: TLS_HANDSHAKE_TIMEOUT_MS,
  listenerCheckIntervalMs: LISTENER_CHECK_INTERVAL_MS,
  listenerCheckTimeoutMs: LISTENER_CHECK_TIMEOUT_MS,
  dropReportIntervalMs: DROP_REPORT_INTERVAL_MS,
  writeHighWaterBytes: WRITE_HIGH_WATER_BYTES,
};
