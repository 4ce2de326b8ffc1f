/**
 * The direct upgrade: a relayed session is replaced by a direct one when hole punching gets through
 * (punch.ts). The dialer of the relayed session proposes, over the relay's control connection, the port it
 * will connect from; the callee answers with its own and both connect at once to the other's public address
 * as the phonebook lists it (the address it saw the user connect from). When both publish a global IPv6
 * address, that is tried first (each from its own first one to the other's first one: no NAT to get
 * through, only the home routers' stateful firewalls, which a symmetric IPv4 NAT cannot spoil), and IPv4
 * after it; both ends take the same steps in the same order, so they meet. The new connection carries an
 * ordinary session (mutual TLS, certificate checks, hello; the same dialer, so it replaces the relayed one
 * by the session manager's rule), and the outbox resends what had no receipt on the old one: nothing is lost,
 * and the receiver keeps ids, so nothing is doubled. A failed punch (a symmetric NAT) leaves the session
 * relayed; one attempt per peer at a time.
 */
import type net from "node:net";
import { messageOf } from "../coded_error.ts";
import { addressKind, firstGlobalIpv6, type SessionPath } from "./candidates.ts";
import type { DialEntry } from "./dialer.ts";
import { freePort, punchConnect } from "./punch.ts";
import type { PeerSession } from "./session/peer_session.ts";

/** How long both ends keep trying to connect. */
export const PUNCH_TIMEOUT_MS = 4000;

export interface UpgradeDeps {
  lookup(name: string): Promise<DialEntry | null>;
  /** Our side of the punch exchange through the relay (null: no relay connection). */
  punch(name: string, port: number): Promise<number>;
  punchReply(to: string, port: number): void;
  /** A session over `socket` that replaces the open (relayed) one. */
  dialOver(name: string, socket: net.Socket, path: SessionPath): Promise<PeerSession>;
  accept(socket: net.Socket, path: SessionPath): void;
  /** The first global IPv6 address we publish, or null. */
  ownIpv6?(): string | null;
  log(level: "info" | "warn", text: string): void;
}

/** The address the phonebook saw the user come from (listed last, a public one), or null. */
export function publicHost(entry: DialEntry | null): string | null {
  const c = [...(entry?.candidates ?? [])].reverse().find((a) => addressKind(a.host) === "public");
  return c?.host ?? null;
}

/** Where to punch to, in order: the peer's global IPv6 address from ours when both have one, then its public
 * IPv4 address. */
function punchTargets(entry: DialEntry | null, ownIpv6: string | null): { host: string; from?: string }[] {
  const out: { host: string; from?: string }[] = [];
  const v6 = firstGlobalIpv6(entry?.candidates ?? []);
  if (v6 && ownIpv6) out.push({ host: v6, from: ownIpv6 });
  const v4 = publicHost(entry);
  if (v4) out.push({ host: v4 });
  return out;
}

/** Tries each target in turn, each for PUNCH_TIMEOUT_MS; resolves with the first connection made. */
async function punchInTurn(
  targets: { host: string; from?: string }[],
  port: number,
  localPort: number,
): Promise<{ socket: net.Socket; host: string }> {
  const errors: string[] = [];
  for (const t of targets) {
    try {
      return {
        socket: await punchConnect(t.host, port, localPort, PUNCH_TIMEOUT_MS, 100, t.from),
        host: t.host,
      };
    } catch (e) {
      errors.push(messageOf(e));
    }
  }
  throw new Error(errors.join("; "));
}

export class DirectUpgrade {
  readonly #d: UpgradeDeps;
  readonly #busy = new Set<string>();

  constructor(deps: UpgradeDeps) {
    this.#d = deps;
  }

  /** Dialer side: after our relayed session to `name` opened. */
  async upgrade(name: string): Promise<void> {
    if (this.#busy.has(name)) return;
    this.#busy.add(name);
    try {
      const targets = punchTargets(await this.#d.lookup(name), this.#d.ownIpv6?.() ?? null);
      if (!targets.length) return;
      const port = await freePort();
      const theirs = await this.#d.punch(name, port);
      const { socket, host } = await punchInTurn(targets, theirs, port);
      const s = await this.#d.dialOver(name, socket, { kind: "punched", address: { host, port: theirs } });
      if (s.path?.kind !== "punched") throw new Error("the punched session did not take over");
      this.#d.log("info", `${name}: the relayed session is now direct (hole punching)`);
    } catch (e) {
      this.#d.log("info", `${name}: staying relayed (${messageOf(e)})`);
    } finally {
      this.#busy.delete(name);
    }
  }

  /** Callee side: `from` connects to us from its `port` now. */
  async onPunch(from: string, port: number): Promise<void> {
    if (this.#busy.has(from)) return;
    this.#busy.add(from);
    try {
      // Only to the addresses the phonebook lists for the user, never one the relay names.
      const targets = punchTargets(await this.#d.lookup(from), this.#d.ownIpv6?.() ?? null);
      if (!targets.length) return;
      const ours = await freePort();
      this.#d.punchReply(from, ours);
      const { socket, host } = await punchInTurn(targets, port, ours);
      this.#d.accept(socket, { kind: "punched", address: { host, port } });
    } catch (e) {
      this.#d.log("info", `${from}: hole punching failed (${messageOf(e)})`);
    } finally {
      this.#busy.delete(from);
    }
  }
}
