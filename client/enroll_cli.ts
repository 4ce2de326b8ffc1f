/** `securechat enroll`: make a key pair on this device and get a certificate from the phonebook's CA. */
import type { Command } from "commander";
import { CliError } from "../cli_error.ts";
import { enroll, EnrollError, groupFingerprint, renewEnrollment, revokeEnrollment } from "./enroll.ts";
import { HomeError, resolveHomeDir } from "./home.ts";
import { DirectoryError } from "./directory_client.ts";
import { fingerprintOf, type KeyAlgorithm, keyFingerprintOf, pemToDer, x509 } from "../pki/mod.ts";

interface EnrollFlags {
  server?: string;
  caFingerprint?: string;
  name?: string;
  token?: string;
  tokenFile?: string;
  home?: string;
  algorithm: string;
  renew?: boolean;
  revoke?: boolean;
  yes?: boolean;
}

/** Reads one line from stdin (a terminal or a pipe). */
async function readLine(): Promise<string> {
  const buf = new Uint8Array(1);
  const bytes: number[] = [];
  while (bytes.length < 1024) {
    const n = await Deno.stdin.read(buf);
    if (n === null || buf[0] === 0x0a) break;
    bytes.push(buf[0]);
  }
  return new TextDecoder().decode(new Uint8Array(bytes)).trim();
}

/** One line from standard input without echo when it is a terminal (the prompt goes to stderr then). */
async function readSecretLine(prompt: string): Promise<string> {
  if (!Deno.stdin.isTerminal()) return await readLine();
  await Deno.stderr.write(new TextEncoder().encode(prompt));
  Deno.stdin.setRaw(true);
  const bytes: number[] = [];
  try {
    const buf = new Uint8Array(1);
    while (bytes.length < 1024) {
      const n = await Deno.stdin.read(buf);
      if (n === null || buf[0] === 0x0d || buf[0] === 0x0a) break;
      if (buf[0] === 0x03) throw new CliError("cancelled");
      if (buf[0] === 0x7f || buf[0] === 0x08) bytes.pop();
      else bytes.push(buf[0]);
    }
  } finally {
    Deno.stdin.setRaw(false);
    await Deno.stderr.write(new TextEncoder().encode("\n"));
  }
  return new TextDecoder().decode(new Uint8Array(bytes)).trim();
}

/** Longest invitation token read from a file or standard input (the phonebook's are 32 characters). */
const MAX_TOKEN_LENGTH = 200;

/** The invitation token from `--token -` (standard input, first line), `--token-file F` (a file only its
 * owner can read) or, last and visible to every user of the machine in the process list, `--token T`. The
 * token itself never appears in a message. */
async function invitationToken(flags: EnrollFlags): Promise<string | undefined> {
  if (flags.token !== undefined && flags.tokenFile !== undefined) {
    throw new CliError("use --token or --token-file, not both");
  }
  let token: string;
  if (flags.tokenFile !== undefined) {
    const path = flags.tokenFile;
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch (e) {
      throw new CliError(`cannot read --token-file ${path}: ${e instanceof Error ? e.message : e}`);
    }
    if (!info.isFile) throw new CliError(`--token-file ${path} is not a regular file`);
    // Like ssh with a private key: a secret others can read may already be theirs.
    if (info.mode !== null && (info.mode & 0o077) !== 0) {
      throw new CliError(
        `--token-file ${path} can be read by other users (mode ${(info.mode & 0o777).toString(8)}): ` +
          `chmod 600 ${path}`,
      );
    }
    if (info.size > MAX_TOKEN_LENGTH + 2) throw new CliError(`--token-file ${path} is too long for a token`);
    token = (await Deno.readTextFile(path)).trim();
  } else if (flags.token === "-") {
    token = await readSecretLine("Invitation token: ");
  } else if (flags.token !== undefined) {
    await Deno.stderr.write(
      new TextEncoder().encode(
        "securechat: warning: a token on the command line is visible to other users of this machine; " +
          "prefer --token - (standard input) or --token-file FILE\n",
      ),
    );
    token = flags.token;
  } else {
    return undefined;
  }
  if (token === "" || token.length > MAX_TOKEN_LENGTH || /\s/.test(token)) {
    throw new CliError("the invitation token is empty or malformed");
  }
  return token;
}

async function ask(question: string): Promise<boolean> {
  await Deno.stderr.write(new TextEncoder().encode(question));
  const answer = (await readLine()).toLowerCase();
  return answer === "y" || answer === "yes";
}

function userError(e: unknown): never {
  if (e instanceof EnrollError || e instanceof HomeError || e instanceof DirectoryError) {
    throw new CliError(e.message);
  }
  throw e;
}

function describe(certPem: string): string {
  const cert = new x509.X509Certificate(pemToDer(certPem, "CERTIFICATE"));
  // The key's fingerprint is what contacts compare (it survives renewals); the certificate's changes each time.
  return `key ${groupFingerprint(keyFingerprintOf(certPem))}, certificate ${
    groupFingerprint(fingerprintOf(certPem))
  }, valid until ${cert.notAfter.toISOString()}`;
}

export function registerEnrollCommand(program: Command): void {
  program.command("enroll")
    .description("make a key pair and get a certificate from the phonebook")
    .option("--server <url>", "the directory, https://HOST:PORT")
    .option("--ca-fingerprint <sha256>", "the CA fingerprint the server operator gave you")
    .option("--name <name>", "your username (lowercase letters, digits, - and _; 3-32 characters)")
    .option(
      "--token <token>",
      "one-time invitation token (invite-only directories); - reads it from standard input",
    )
    .option("--token-file <file>", "read the invitation token from a file only you can read (mode 0600)")
    .option("--home <dir>", "home folder (default: $SECURECHAT_HOME or the platform's data folder)")
    .option("--algorithm <alg>", "key type: p256 or ed25519", "p256")
    .option("--renew", "renew the certificate with the current key")
    .option("--revoke", "revoke the current certificate")
    .option("--yes", "with --revoke: do not ask for confirmation")
    .action(async (flags: EnrollFlags) => {
      const home = resolveHomeDir(flags.home);
      if (flags.renew && flags.revoke) throw new CliError("--renew and --revoke cannot be used together");
      if (flags.renew) {
        const st = await renewEnrollment(home).catch(userError);
        console.log(`Renewed ${st.name}: ${describe(st.certPem)}`);
        return;
      }
      if (flags.revoke) {
        if (!flags.yes && !(await ask("Revoke your certificate? Nobody will accept it any more. [y/N] "))) {
          throw new CliError("not revoked");
        }
        const r = await revokeEnrollment(home).catch(userError);
        console.log(`Revoked ${r.name}'s certificate ${r.serial}`);
        return;
      }
      if (!flags.server) throw new CliError("--server https://HOST:PORT is required");
      if (!flags.name) throw new CliError("--name is required");
      if (flags.algorithm !== "p256" && flags.algorithm !== "ed25519") {
        throw new CliError("--algorithm must be p256 or ed25519");
      }
      const token = await invitationToken(flags);
      const st = await enroll({
        server: flags.server,
        caFingerprint: flags.caFingerprint,
        name: flags.name,
        token,
        home,
        algorithm: flags.algorithm as KeyAlgorithm,
        confirmFingerprint: (fp) =>
          ask(
            `The directory's CA has the SHA-256 fingerprint\n  ${groupFingerprint(fp)}\n` +
              "Compare it with the one the server operator gave you. Trust this CA? [y/N] ",
          ),
      }).catch(userError);
      console.log(`Enrolled as ${st.name}: ${describe(st.certPem)}`);
      console.log(`Files in ${st.dir} (private key with mode 0600)`);
    });
}
