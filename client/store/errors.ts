/** The store's one error type (its own module so the store and the group committer can both raise it). */
export class StoreError extends Error {
  constructor(readonly code: "STORE_FAILED" | "NOT_FOUND", message: string) {
    super(message);
    this.name = "StoreError";
  }
}
