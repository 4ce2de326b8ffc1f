/**
 * First run of `securechat chat` on a device with no identity yet: asks for the phonebook's address, its CA
 * fingerprint (or shows the one it serves for the user to confirm) and a name, then enrolls. The prompts and
 * the enrollment are passed in, so the whole dialogue can be tested with scripted answers.
 */
import { confirm, input, password } from "@inquirer/prompts";
import { CliError } from "../../cli_error.ts";
import { canonicalUsername, fingerprintOf, normalizeFingerprint, pemToDer } from "../../pki/mod.ts";
import { enroll, EnrollError, fetchCaCertificateUnverified } from "../enroll.ts";
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
  /** Fetches the phonebook's CA certificate (untrusted yet) and returns its SHA-256 fingerprint (64 hex).
   * @throws EnrollError UNREACHABLE or BAD_CERTIFICATE: the address is checked before anything else is asked. */
  probe(server: string): Promise<string>;
  enroll(opts: {
    server: string;
    caFingerprint?: string;
    name: string;
    token?: string;
    home: string;
    confirmFingerprint?: (fingerprint: string) => Promise<boolean>;
  }): Promise<HomeState>;
}

/** The phonebook's CA fingerprint as served (not trusted: the user compares it, enroll checks it again). */
export async function probeFingerprint(server: string): Promise<string> {
  const text = await fetchCaCertificateUnverified(server);
  try {
    return fingerprintOf(pemToDer(text, "CERTIFICATE"));
  } catch {
    throw new EnrollError("BAD_CERTIFICATE", `${server} does not serve a CA certificate: is it a phonebook?`);
  }
}

export const consoleIo: FirstRunIo = {
  input: (q) => input(q),
  password: (q) => password({ ...q, mask: "*" }),
  confirm: (q) => confirm(q),
  say: (line) => console.log(line),
  probe: probeFingerprint,
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
 * Runs the dialogue until enrollment succeeds: the address is checked as soon as it is given, the fingerprint
 * as soon as it is typed (a wrong one is said at once and never offered again as the default), a taken name
 * or a refused token asks only that question again.
 * @throws CliError when the user cancels (Ctrl+C, or declines to try again) or after MAX_ATTEMPTS failures.
 */
export async function firstRun(home: string, io: FirstRunIo = consoleIo): Promise<HomeState> {
  io.say("This device has no securechat identity yet. Let's enroll it with a phonebook.");
  io.say(`(your key pair is made here and never leaves ${home})`);
  let failures = 0;
  const failed = (why: string) => {
    if (++failures >= MAX_ATTEMPTS) throw new CliError(`enrollment failed: ${why}`);
  };
  try {
    let server = DEFAULT_SERVER;
    let name = "";
    for (;;) {
      server = (await io.input({ message: "Phonebook address", default: server, validate: validateServer }))
        .trim();
      let served: string;
      try {
        served = await io.probe(server);
      } catch (e) {
        if (!(e instanceof EnrollError)) throw e;
        io.say(`${e.message}`);
        io.say("Check the address the phonebook's operator gave you (https://HOST:PORT), and that it runs.");
        failed(e.message);
        continue;
      }
      // The fingerprint: typed and compared at once, or shown and confirmed.
      let fingerprint: string | null = null;
      while (fingerprint === null) {
        const typed = (await io.input({
          message: "Phonebook CA fingerprint (SHA-256; empty to check the one it shows)",
          validate: validateFingerprint,
        })).trim();
        if (typed !== "") {
          if (normalizeFingerprint(typed) === served) {
            fingerprint = served;
            break;
          }
          io.say(
            `That is not the fingerprint ${server} shows (${groupFingerprint(served)}): a wrong address or ` +
              "someone in between. Check it with the phonebook's operator, or leave it empty to see it.",
          );
          failed("wrong CA fingerprint");
          continue;
        }
        const ok = await io.confirm({
          message:
            `The phonebook's CA fingerprint is\n  ${groupFingerprint(served)}\nDoes it match the one ` +
            "you were given?",
          default: false,
        });
        if (ok) fingerprint = served;
        else {
          io.say(
            "Not confirmed: nothing was written. Type the fingerprint you were given, or check the address.",
          );
          failed("CA fingerprint not confirmed");
        }
      }
      let token = "";
      let askName = true;
      let askToken = true;
      for (;;) {
        if (askName) {
          name = (await io.input({
            message: "Your user name",
            default: name || undefined,
            validate: validateName,
          }))
            .trim();
        }
        if (askToken) {
          token = (await io.password({ message: "Invite token (empty if the phonebook is open)" })).trim();
        }
        try {
          const state = await io.enroll({
            server,
            name,
            home,
            // Checked again by enroll against what it fetches: the phonebook cannot switch keys in between.
            caFingerprint: fingerprint,
            ...(token ? { token } : {}),
          });
          io.say(`Enrolled as ${state.name}. Opening the chat...`);
          return state;
        } catch (e) {
          if (!(e instanceof EnrollError)) throw e;
          io.say(`Enrollment failed (${e.code}): ${e.message}`);
          if (e.code === "ALREADY_ENROLLED") throw new CliError(e.message);
          failed(e.message);
          if (e.code === "NAME_TAKEN" || e.code === "BAD_USERNAME") {
            askName = true;
            askToken = false;
            continue;
          }
          if (e.code === "BAD_TOKEN") {
            askName = false;
            askToken = true;
            continue;
          }
          if (!(await io.confirm({ message: "Try again from the address?", default: true }))) {
            throw new CliError(`enrollment failed: ${e.message}`);
          }
          break;
        }
      }
    }
  } catch (e) {
    if (isPromptExit(e)) throw new CliError("enrollment cancelled", 130);
    throw e;
  }
}
