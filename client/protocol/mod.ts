/** The peer frame protocol (docs/protocol.md): constants, errors, framing, frames, signatures. */
export * from "./constants.ts";
export * from "./errors.ts";
export * from "./codec.ts";
export * from "./frames.ts";
export * from "./binding.ts";
