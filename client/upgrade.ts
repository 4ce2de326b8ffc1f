/**
 * The direct upgrade: a relayed session is replaced by a direct one when hole punching gets through
 * (punch.ts). The dialer of the relayed session proposes, over the relay's control connection, the port it
 * will connect from; the callee answers with its own and both connect at once to the other's public address
 * as the phonebook lists it (the address it saw the user connect from). The new connection carries an
 * ordinary session (mutual TLS, certificate checks, hello; the same dialer, so it replaces the relayed one
 * by the session manager's rule), and the outbox resends what had no receipt on the old one: nothing is lost,
 * and the receiver keeps ids, so nothing is doubled. A failed punch (a symmetric NAT) leaves the session
 * relayed; one attempt per peer at a time.
 */
import type net from "node:net";
import { messageOf } from "../coded_error.ts";
import { addressKind, type SessionPath } from "./candidates.ts";
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
  log(level: "info" | "warn", text: string): void;
}

/** The address the phonebook saw the user come from (listed last, a public one), or null. */
export function publicHost(entry: DialEntry | null): string | null {
  const c = [...(entry?.candidates ?? [])].reverse().find((a) => addressKind(a.host) === "public");
  return c?.host ?? null;
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
      const host = publicHost(await this.#d.lookup(name));
      if (!host) return;
      const port = await freePort();
      const theirs = await this.#d.punch(name, port);
      const socket = await punchConnect(host, theirs, port, PUNCH_TIMEOUT_MS);
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
      // Only to the address the phonebook lists for the user, never one the relay names.
      const host = publicHost(await this.#d.lookup(from));
      if (!host) return;
      const ours = await freePort();
      this.#d.punchReply(from, ours);
      const socket = await punchConnect(host, port, ours, PUNCH_TIMEOUT_MS);
      this.#d.accept(socket, { kind: "punched", address: { host, port } });
    } catch (e) {
      this.#d.log("info", `${from}: hole punching failed (${messageOf(e)})`);
    } finally {
      this.#busy.delete(from);
    }
  }
}
