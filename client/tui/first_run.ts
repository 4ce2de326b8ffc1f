/**
 * First run of `securechat chat` on a device with no identity yet: asks for the phonebook's address, its CA
 * fingerprint (or shows the one it serves for the user to confirm) and a name, then enrolls. The prompts and
 * the enrollment are passed in, so the whole dialogue can be tested with scripted answers.
 */
import { confirm, input, password } from "@inquirer/prompts";
import { CliError } from "../../cli_error.ts";
import { canonicalUsername, normalizeFingerprint } from "../../pki/mod.ts";
import { enroll, EnrollError } from "../enroll.ts";
import type { HomeState } from "../home.ts";
import { groupFingerprint } from "./format.ts";

/** What the user is offered as the phonebook address when they have no better idea (a local `serve`). */
export const DEFAULT_SERVER = "https://127.0.0.1:10040";
/** Attempts before first run gives up (each failure says why and asks whether to try again). */
export const MAX_ATTEMPTS = 5;

export interface FirstRunIo {
  input(q: { message: string; default?: string; validate?: (v: string) => true | string }): Promise<string>;
  password(q: { message: string }): Promise<string>;
  confirm(q: { message: string; default?: boolean }): Promise<boolean>;
  say(line: string): void;
  enroll(opts: {
    server: string;
    caFingerprint?: string;
    name: string;
    token?: string;
    home: string;
    confirmFingerprint?: (fingerprint: string) => Promise<boolean>;
  }): Promise<HomeState>;
}

export const consoleIo: FirstRunIo = {
  input: (q) => input(q),
  password: (q) => password({ ...q, mask: "*" }),
  confirm: (q) => confirm(q),
  say: (line) => console.log(line),
  enroll,
};

export function validateServer(v: string): true | string {
  try {
    const u = new URL(v.trim());
    return u.protocol === "https:" ? true : "the address must start with https://";
  } catch {
    return "not a URL: expected https://HOST:PORT";
  }
}

export function validateFingerprint(v: string): true | string {
  if (v.trim() === "") return true;
  try {
    normalizeFingerprint(v.trim());
    return true;
  } catch {
    return "64 hexadecimal digits (colons and spaces allowed), or empty to see the server's";
  }
}

export function validateName(v: string): true | string {
  try {
    canonicalUsername(v.trim());
    return true;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

function isPromptExit(e: unknown): boolean {
  return e instanceof Error && (e.name === "ExitPromptError" || e.name === "AbortPromptError");
}

/**
 * Runs the dialogue until enrollment succeeds. @throws CliError when the user cancels (Ctrl+C, or declines
 * to try again).
 */
export async function firstRun(home: string, io: FirstRunIo = consoleIo): Promise<HomeState> {
  io.say("This device has no securechat identity yet. Let's enroll it with a phonebook.");
  io.say(`(your key pair is made here and never leaves ${home})`);
  try {
    let server = DEFAULT_SERVER;
    let fingerprint = "";
    let name = "";
    for (let attempt = 1;; attempt++) {
      server = (await io.input({ message: "Phonebook address", default: server, validate: validateServer }))
        .trim();
      fingerprint = (await io.input({
        message: "Phonebook CA fingerprint (SHA-256; empty to check the one it shows)",
        default: fingerprint || undefined,
        validate: validateFingerprint,
      })).trim();
      name =
        (await io.input({ message: "Your user name", default: name || undefined, validate: validateName }))
          .trim();
      const token = (await io.password({ message: "Invite token (empty if the phonebook is open)" })).trim();
      try {
        const state = await io.enroll({
          server,
          name,
          home,
          ...(fingerprint ? { caFingerprint: fingerprint } : {}),
          ...(token ? { token } : {}),
          confirmFingerprint: (fp) =>
            io.confirm({
              message:
                `The phonebook's CA fingerprint is\n  ${groupFingerprint(fp)}\nDoes it match the one you ` +
                "were given?",
              default: false,
            }),
        });
        io.say(`Enrolled as ${state.name}. Opening the chat...`);
        return state;
      } catch (e) {
        if (!(e instanceof EnrollError)) throw e;
        io.say(`Enrollment failed (${e.code}): ${e.message}`);
        if (e.code === "ALREADY_ENROLLED") throw new CliError(e.message);
        if (attempt >= MAX_ATTEMPTS || !(await io.confirm({ message: "Try again?", default: true }))) {
          throw new CliError(`enrollment failed: ${e.message}`);
        }
      }
    }
  } catch (e) {
    if (isPromptExit(e)) throw new CliError("enrollment cancelled", 130);
    throw e;
  }
}
