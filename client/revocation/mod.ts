/** The chat engine's revocation list: pure rules (rules.ts) and the cache that fetches and keeps it. */
export * from "./rules.ts";
export * from "./cache.ts";
