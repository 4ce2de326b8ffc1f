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
  probe: (server: string) => Promise<string> = () => Promise.resolve(FP),
): FirstRunIo & { asked: string[]; said: string[]; defaults: (string | undefined)[] } {
  const queue = [...answers];
  const asked: string[] = [];
  const said: string[] = [];
  const defaults: (string | undefined)[] = [];
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
    defaults,
    probe,
    input: (q) => {
      defaults.push(q.default);
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

Deno.test("first run: a given fingerprint is compared at once and passed to enroll with the answers", async () => {
  const calls: EnrollOpts[] = [];
  const io = scripted(["https://pb.test:1", `${FP.slice(0, 2)}:${FP.slice(2)}`, "alice", "tok"], (o) => {
    calls.push(o);
    return Promise.resolve(fakeState("alice"));
  });
  const state = await firstRun("/home/x", io);
  assert.equal(state.name, "alice");
  assert.equal(calls.length, 1);
  assert.equal(calls[0].server, "https://pb.test:1");
  assert.equal(calls[0].caFingerprint, FP, "the served fingerprint the user's matched");
  assert.equal(calls[0].name, "alice");
  assert.equal(calls[0].token, "tok");
  assert.equal(calls[0].home, "/home/x");
  assert.match(io.said.join("\n"), /Enrolled as alice/);
});

Deno.test("first run: without a fingerprint the user is shown the server's, in groups of four, and confirms it", async () => {
  const io = scripted(["https://pb.test:1", "", true, "bob", ""], (o) => {
    assert.equal(o.caFingerprint, FP);
    assert.equal(o.token, undefined);
    return Promise.resolve(fakeState("bob"));
  });
  await firstRun("/h", io);
  assert.ok(io.asked.some((q) => q.includes("abab abab abab")), io.asked.join("\n"));
});

Deno.test("first run: an unreachable address is said right away and asked again before anything else", async () => {
  const probe = (server: string) =>
    server.includes("bad")
      ? Promise.reject(new EnrollError("UNREACHABLE", `cannot reach the directory at ${server}: refused`))
      : Promise.resolve(FP);
  const io = scripted(
    ["https://bad.test:1", "https://pb.test:1", FP, "dave", ""],
    () => Promise.resolve(fakeState("dave")),
    probe,
  );
  await firstRun("/h", io);
  assert.deepEqual(io.asked.slice(0, 3), ["Phonebook address", "Phonebook address", io.asked[2]]);
  assert.match(io.asked[2], /fingerprint/);
  assert.match(
    io.said.join("\n"),
    /cannot reach the directory at https:\/\/bad\.test:1[\s\S]*Check the address/,
  );
  assert.equal(io.defaults[1], "https://bad.test:1", "the address offered again for correction");
});

Deno.test("first run: a wrong fingerprint is said at once and not offered again as the default", async () => {
  const wrong = "cd".repeat(32);
  const io = scripted(["https://pb.test:1", wrong, "", true, "carol", ""], (o) => {
    assert.equal(o.caFingerprint, FP);
    return Promise.resolve(fakeState("carol"));
  });
  await firstRun("/h", io);
  assert.match(io.said.join("\n"), /That is not the fingerprint https:\/\/pb\.test:1 shows \(abab abab/);
  const fpQuestions = io.asked.map((q, i) => [q, io.defaults[i]] as const).filter(([q]) =>
    /fingerprint \(/.test(q)
  );
  assert.equal(fpQuestions.length, 2);
  assert.equal(fpQuestions[1][1], undefined, "the wrong fingerprint is not the default");
});

Deno.test("first run: a taken name asks only for another name; other errors may restart, or give up", async () => {
  let attempts = 0;
  const enroll = (o: EnrollOpts) => {
    attempts++;
    if (o.name === "taken") {
      return Promise.reject(new EnrollError("NAME_TAKEN", `the name "taken" is taken: pick another name`));
    }
    if (o.name === "down") return Promise.reject(new EnrollError("UNREACHABLE", "the phonebook went away"));
    return Promise.resolve(fakeState(o.name));
  };
  const io = scripted(["https://pb.test:1", FP, "taken", "tok", "free"], enroll);
  const state = await firstRun("/h", io);
  assert.equal(state.name, "free");
  assert.equal(attempts, 2);
  assert.match(io.said.join("\n"), /NAME_TAKEN.*pick another name/);
  assert.equal(io.asked.filter((q) => /token/.test(q)).length, 1, "the token is not asked again");

  const giveUp = scripted(["https://pb.test:1", FP, "down", "", false], enroll);
  await assert.rejects(firstRun("/h", giveUp), (e) => e instanceof CliError && /went away/.test(e.message));
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

Deno.test("first run: enrolls against a real phonebook, and refuses a wrong fingerprint at once", async () => {
  const d = await startTestDirectory();
  const tmp = await Deno.makeTempDir({ prefix: "securechat-firstrun-" });
  try {
    const { enroll } = await import("../client/enroll.ts");
    const { probeFingerprint } = await import("../client/tui/first_run.ts");
    const wrongHome = join(tmp, "wrong");
    const exit = new Error("User force closed the prompt");
    exit.name = "ExitPromptError";
    const wrong = scripted([d.dir.url, "cd".repeat(32), exit], enroll, probeFingerprint);
    await assert.rejects(firstRun(wrongHome, wrong), CliError);
    assert.match(wrong.said.join("\n"), /That is not the fingerprint/);
    assert.equal(await isEnrolled(wrongHome), false);

    const home = join(tmp, "alice");
    const io = scripted([d.dir.url, "", true, "alice", ""], enroll, probeFingerprint);
    const state = await firstRun(home, io);
    assert.ok(io.asked.some((q) => q.includes(d.dir.caFingerprint.slice(0, 4) + " ")), "shown grouped");
    assert.equal(state.name, "alice");
    assert.equal(state.caFingerprint, d.dir.caFingerprint);
    assert.equal(await isEnrolled(home), true);
  } finally {
    await d.close();
    await Deno.remove(tmp, { recursive: true });
  }
});
