/** Wire contracts shared by `server/` and `client/` (each defined once, with its runtime decoder). */
export * from "./phonebook.ts";
export * from "./relay.ts";
export * from "./knock.ts";
