/**
 * First run of `securechat chat`: the enrollment dialogue with scripted answers, against a fake enrollment
 * (every branch: fingerprint given, shown and confirmed, refused, retry after an error, cancel) and against a
 * real phonebook in a temporary folder.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CliError } from "../cli_error.ts";
import { EnrollError } from "../client/enroll.ts";
import type { HomeState } from "../client/home.ts";
import { isEnrolled } from "../client/home.ts";
import {
  firstRun,
  type FirstRunIo,
  validateFingerprint,
  validateName,
  validateServer,
} from "../client/tui/first_run.ts";
import { startTestDirectory } from "./helpers/directory.ts";

type EnrollOpts = Parameters<FirstRunIo["enroll"]>[0];

/** Answers prompts from a script (by order) and records what was asked and said. */
function scripted(
  answers: (string | boolean | Error)[],
  enroll: (o: EnrollOpts) => Promise<HomeState>,
): FirstRunIo & { asked: string[]; said: string[] } {
  const queue = [...answers];
  const asked: string[] = [];
  const said: string[] = [];
  const next = (message: string) => {
    asked.push(message);
    if (queue.length === 0) throw new Error(`no scripted answer for "${message}"`);
    const a = queue.shift();
    if (a instanceof Error) throw a;
    return a;
  };
  return {
    asked,
    said,
    input: (q) => {
      // Like inquirer: an empty answer takes the default, and the result is validated.
      const raw = String(next(q.message));
      const a = raw === "" && q.default ? q.default : raw;
      const v = q.validate?.(a);
      if (v !== undefined && v !== true) throw new Error(`scripted answer "${a}" fails validation: ${v}`);
      return Promise.resolve(a);
    },
    password: (q) => Promise.resolve(String(next(q.message))),
    confirm: (q) => Promise.resolve(Boolean(next(q.message))),
    say: (line) => said.push(line),
    enroll,
  };
}

const FP = "ab".repeat(32);

function fakeState(name: string): HomeState {
  return {
    dir: "/nowhere",
    name,
    server: "",
    caPem: "",
    caFingerprint: FP,
    certPem: "",
    keyPem: "",
    roughtime: [],
  };
}

Deno.test("first run: validators accept what enroll accepts and explain the rest", () => {
  assert.equal(validateServer("https://127.0.0.1:10040"), true);
  assert.match(String(validateServer("http://x")), /https/);
  assert.match(String(validateServer("nonsense")), /not a URL/);
  assert.equal(validateFingerprint(""), true);
  assert.equal(validateFingerprint("AB:".repeat(31) + "AB"), true);
  assert.notEqual(validateFingerprint("abc"), true);
  assert.equal(validateName("alice"), true);
  assert.notEqual(validateName(""), true);
  assert.notEqual(validateName("al ice"), true);
});

Deno.test("first run: a given fingerprint is passed to enroll with the answers", async () => {
  const calls: EnrollOpts[] = [];
  const io = scripted(["https://pb.test:1", `${FP.slice(0, 2)}:${FP.slice(2)}`, "alice", "tok"], (o) => {
    calls.push(o);
    return Promise.resolve(fakeState("alice"));
  });
  const state = await firstRun("/home/x", io);
  assert.equal(state.name, "alice");
  assert.equal(calls.length, 1);
  assert.equal(calls[0].server, "https://pb.test:1");
  assert.equal(calls[0].caFingerprint, `${FP.slice(0, 2)}:${FP.slice(2)}`);
  assert.equal(calls[0].name, "alice");
  assert.equal(calls[0].token, "tok");
  assert.equal(calls[0].home, "/home/x");
  assert.match(io.said.join("\n"), /Enrolled as alice/);
});

Deno.test("first run: without a fingerprint the user is shown the server's and must confirm it", async () => {
  let confirmed: boolean | null = null;
  const io = scripted(["https://pb.test:1", "", "bob", "", true], async (o) => {
    assert.equal(o.caFingerprint, undefined);
    assert.equal(o.token, undefined);
    confirmed = await o.confirmFingerprint!(FP);
    if (!confirmed) throw new EnrollError("NOT_CONFIRMED", "not confirmed");
    return fakeState("bob");
  });
  await firstRun("/h", io);
  assert.equal(confirmed, true);
  // The fingerprint is shown in groups of four for reading aloud.
  assert.ok(io.asked.some((q) => q.includes("abab abab abab")), io.asked.join("\n"));
});

Deno.test("first run: an enrollment error is explained and the user may try again, or give up", async () => {
  let attempts = 0;
  const enroll = (o: EnrollOpts) => {
    attempts++;
    if (o.name === "taken") return Promise.reject(new EnrollError("NAME_TAKEN", "the name taken is in use"));
    return Promise.resolve(fakeState(o.name));
  };
  const io = scripted(["https://pb.test:1", FP, "taken", "", true, "", "", "free", ""], enroll);
  const state = await firstRun("/h", io);
  assert.equal(state.name, "free");
  assert.equal(attempts, 2);
  assert.match(io.said.join("\n"), /NAME_TAKEN/);

  const giveUp = scripted(["https://pb.test:1", FP, "taken", "", false], enroll);
  await assert.rejects(firstRun("/h", giveUp), (e) => e instanceof CliError && /in use/.test(e.message));
});

Deno.test("first run: Ctrl+C in a prompt cancels with a clear message and nothing enrolled", async () => {
  const exit = new Error("User force closed the prompt");
  exit.name = "ExitPromptError";
  let enrolled = false;
  const io = scripted(["https://pb.test:1", exit], () => {
    enrolled = true;
    return Promise.resolve(fakeState("x"));
  });
  await assert.rejects(
    firstRun("/h", io),
    (e) => e instanceof CliError && e.message === "enrollment cancelled",
  );
  assert.equal(enrolled, false);
});

Deno.test("first run: enrolls against a real phonebook, and refuses a wrong fingerprint", async () => {
  const d = await startTestDirectory();
  const tmp = await Deno.makeTempDir({ prefix: "securechat-firstrun-" });
  try {
    const { enroll } = await import("../client/enroll.ts");
    const wrongHome = join(tmp, "wrong");
    const wrong = scripted([d.dir.url, "cd".repeat(32), "mallory", "", false], enroll);
    await assert.rejects(firstRun(wrongHome, wrong), CliError);
    assert.match(wrong.said.join("\n"), /WRONG_FINGERPRINT/);
    assert.equal(await isEnrolled(wrongHome), false);

    const home = join(tmp, "alice");
    let shown = "";
    const io = scripted([d.dir.url, "", "alice", "", true], async (o) => {
      return await enroll({
        ...o,
        confirmFingerprint: (fp) => {
          shown = fp;
          return o.confirmFingerprint!(fp);
        },
      });
    });
    const state = await firstRun(home, io);
    assert.equal(shown, d.dir.caFingerprint);
    assert.equal(state.name, "alice");
    assert.equal(state.caFingerprint, d.dir.caFingerprint);
    assert.equal(await isEnrolled(home), true);
  } finally {
    await d.close();
    await Deno.remove(tmp, { recursive: true });
  }
});
