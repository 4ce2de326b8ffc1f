/**
 * Usernames have exactly one canonical form, and only that form is accepted: anything else (upper case,
 * Unicode look-alikes, invisible characters, other normalisations) is refused rather than folded, so that two
 * spellings can never name the same person or two people with names that look the same.
 */
import { UsernameError } from "./errors.ts";

export const USERNAME_MIN_LENGTH = 3;
export const USERNAME_MAX_LENGTH = 32;
/** Lowercase ASCII letters, digits, `-` and `_`; the first character is a letter or digit so that a name can
 * never be mistaken for a command-line flag. */
const CANONICAL = /^[a-z0-9][a-z0-9_-]*$/;

/** Returns `input` when it is a canonical username; throws UsernameError (code "BAD_USERNAME") otherwise. */
export function canonicalUsername(input: string): string {
  if (typeof input !== "string") {
    throw new UsernameError("username must be a string", "TYPE");
  }
  if (input.length < USERNAME_MIN_LENGTH || input.length > USERNAME_MAX_LENGTH) {
    throw new UsernameError(
      `username must be ${USERNAME_MIN_LENGTH}-${USERNAME_MAX_LENGTH} characters long`,
      "LENGTH",
    );
  }
  if (!/^[a-z0-9_-]*$/.test(input)) {
    throw new UsernameError(
      "username may contain only lowercase ASCII letters, digits, '-' and '_'",
      "CHARACTERS",
    );
  }
  if (!CANONICAL.test(input)) {
    throw new UsernameError("username must start with a lowercase letter or a digit", "FIRST_CHARACTER");
  }
  return input;
}

/** True when `input` is a canonical username. */
export function isCanonicalUsername(input: string): boolean {
  try {
    canonicalUsername(input);
    return true;
  } catch {
    return false;
  }
}
