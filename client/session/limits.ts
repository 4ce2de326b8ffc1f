/** Tunable limits of peer sessions (defaults from the protocol constants; tests shrink the timeouts). */
import {
  HELLO_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  KEEPALIVE_INTERVAL_MS,
  MAX_FRAME_BYTES,
  MAX_PENDING_PER_ADDRESS,
  MAX_SESSIONS_PER_PEER,
  READ_HIGH_WATER_BYTES,
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
  writeHighWaterBytes: WRITE_HIGH_WATER_BYTES,
};
