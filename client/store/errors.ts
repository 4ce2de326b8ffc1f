/** The store's one error type (its own module so the store and the group committer can both raise it). */
import { CodedError } from "../../coded_error.ts";

export class StoreError extends CodedError<"STORE_FAILED" | "NOT_FOUND"> {}
