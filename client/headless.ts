/**
 * `securechat chat --headless`: the engine as JSON lines (docs/usage-chat.md). One command object per line
 * on stdin, one event object per line on stdout. A bad command gets an `error` event and changes nothing.
 */
import { formatAddress } from "./candidates.ts";
import { codeOf, messageOf } from "../coded_error.ts";
import type { ChatEngine } from "./engine.ts";
import type { ChatMessage, EngineEvent } from "./engine_types.ts";
import { parseTtl, parseTtlMode } from "./expiry.ts";
import type { EarlyEvents } from "./early_events.ts";

/** Longest command line accepted; a longer one is refused without being parsed. */
export const MAX_COMMAND_LINE_BYTES = 256 * 1024;

export type HeadlessErrorCode =
  | "UNKNOWN_USER"
  | "REVOKED_USER"
  | "BAD_JSON"
  | "BAD_COMMAND"
  | "UNKNOWN_COMMAND"
  | "BAD_FIELD"
  | "LINE_TOO_LONG";

class CommandError extends Error {
  constructor(readonly code: HeadlessErrorCode | string, message: string) {
    super(message);
  }
}

type Json = Record<string, unknown>;

export function messageJson(m: ChatMessage): Json {
  return {
    id: m.id,
    from: m.from,
    to: m.direction === "out" ? m.peer : undefined,
    peer: m.peer,
    direction: m.direction,
    text: m.text,
    sentAt: m.sentAt,
    expiresAt: m.expiresAt,
    // Only for an "after read" message not displayed yet: when it dies unread.
    unreadExpiresAt: m.unreadExpiresAt,
    ttlMs: m.ttlMs,
    ttlMode: m.ttlMode,
    state: m.state,
  };
}

/** The JSON line for an engine event (flat: `message` events carry the message's fields). */
export function eventJson(e: EngineEvent): Json {
  if (e.event === "message") return { event: "message", ...messageJson(e.message) };
  if (e.event === "time") return { event: "time", ...e.status };
  if (e.event === "certificate") return { event: "certificate", ...e.status };
  return { ...e };
}

function field(o: Json, k: string): string {
  const v = o[k];
  if (typeof v !== "string" || v.length === 0) throw new CommandError("BAD_FIELD", `"${k}" must be a string`);
  return v;
}

export interface HeadlessIo {
  lines: AsyncIterable<string>;
  write(line: string): void;
}

/** Runs until {"cmd":"quit"} or the end of input. Does not close the engine (the caller does). With `early`
 * (the engine's onEvent was `early.push`), the events emitted while the engine started follow `ready`. */
export async function runHeadless(engine: ChatEngine, io: HeadlessIo, early?: EarlyEvents): Promise<void> {
  const out = (o: Json) => io.write(JSON.stringify(o));
  // While a send is being answered, events wait: the engine may report the message `sent` before `send`
  // returns, and a bot must get the `queued` answer (with its `ref` and the message id) first.
  let holding = false;
  const held: Json[] = [];
  const release = () => {
    holding = false;
    for (const o of held.splice(0)) out(o);
  };
  const listener = (e: EngineEvent) => (holding ? held.push(eventJson(e)) : out(eventJson(e)));
  // Events after start but before `ready` is written wait with the early ones, so `ready` stays first.
  holding = true;
  const unsubscribe = early ? early.attach(listener) : engine.subscribe(listener);
  const a = engine.address;
  const adv = engine.advertisedAddress;
  out({
    event: "ready",
    name: engine.name,
    address: formatAddress(a),
    advertised: formatAddress(adv),
    fingerprint: engine.ownFingerprint(),
    time: engine.timeStatus().state,
    certificate: engine.certificateStatus(),
  });
  // Said at once: the engine's own warning came before anyone listened, and the next try is a minute away.
  const pb = engine.phonebookStatus();
  if (!pb.reachable) {
    out({
      event: "log",
      level: "error",
      text: `phonebook unreachable: ${pb.reason ?? "no answer"}; messages wait in the outbox, retrying`,
    });
  }
  const cert = engine.certificateStatus();
  if (cert.state === "expired" || cert.state === "revoked") {
    out({ event: "log", level: "error", text: `your certificate is ${cert.state}: ${cert.fix}` });
  } else if (cert.expiringSoon) {
    out({
      event: "log",
      level: "warn",
      text: `your certificate lapses ${new Date(cert.notAfter).toISOString()} and is not renewed yet${
        cert.lastError ? ` (${cert.lastError})` : ""
      }`,
    });
  }
  release();
  try {
    for await (const line of io.lines) {
      if (line.trim() === "") continue;
      let ref: unknown = undefined;
      try {
        if (line.length > MAX_COMMAND_LINE_BYTES) {
          throw new CommandError("LINE_TOO_LONG", "command line too long");
        }
        let c: unknown;
        try {
          c = JSON.parse(line);
        } catch {
          throw new CommandError("BAD_JSON", "not a JSON object");
        }
        if (typeof c !== "object" || c === null || Array.isArray(c)) {
          throw new CommandError("BAD_JSON", "not a JSON object");
        }
        const cmd = c as Json;
        ref = typeof cmd.ref === "string" || typeof cmd.ref === "number" ? cmd.ref : undefined;
        const withRef = (o: Json) => (ref === undefined ? o : { ...o, ref });
        if (typeof cmd.cmd !== "string") throw new CommandError("BAD_COMMAND", `missing "cmd"`);
        switch (cmd.cmd) {
          case "quit":
            return;
          case "send": {
            const to = field(cmd, "to");
            if (typeof cmd.text !== "string") throw new CommandError("BAD_FIELD", `"text" must be a string`);
            let ttlMs: number | null | undefined;
            let ttlMode;
            try {
              ttlMs = cmd.ttl === undefined ? undefined : cmd.ttl === null ? null : parseTtl(cmd.ttl);
              ttlMode = cmd.ttlMode === undefined ? undefined : parseTtlMode(cmd.ttlMode);
            } catch (e) {
              throw new CommandError("BAD_TTL", (e as Error).message);
            }
            holding = true;
            try {
              // A name the phonebook does not know would wait in the outbox for ever, as a new contact.
              const status = await engine.recipientStatus(to);
              if (status === "unknown") {
                throw new CommandError(
                  "UNKNOWN_USER",
                  `no user "${to}" in the phonebook: check the name ("contacts" lists who is there); nothing queued`,
                );
              }
              if (status === "revoked") {
                throw new CommandError(
                  "REVOKED_USER",
                  `${to}'s certificate is revoked: a message could never be delivered; nothing queued`,
                );
              }
              const m = await engine.send(to, cmd.text, { ttlMs, ttlMode });
              out(withRef({ event: "queued", ...messageJson(m) }));
            } finally {
              // After the answer or the error, never before.
              queueMicrotask(release);
            }
            break;
          }
          case "contacts":
            out(withRef({ event: "contacts", contacts: await engine.contacts() }));
            break;
          case "history": {
            const peer = field(cmd, "with");
            out(withRef({ event: "history", with: peer, messages: engine.history(peer).map(messageJson) }));
            break;
          }
          case "read":
            engine.markRead(field(cmd, "id"));
            break;
          case "accept-key":
            engine.acceptKey(field(cmd, "name"));
            break;
          case "verify":
            engine.markVerified(field(cmd, "name"));
            break;
          case "default-ttl": {
            const peer = field(cmd, "with");
            let ttl: number | null;
            try {
              ttl = cmd.ttl === null || cmd.ttl === undefined ? null : parseTtl(cmd.ttl);
            } catch (e) {
              throw new CommandError("BAD_TTL", (e as Error).message);
            }
            engine.setDefaultTtl(peer, ttl);
            break;
          }
          case "typing":
            engine.typing(field(cmd, "to"));
            break;
          case "block":
            out(withRef({ event: "blocked", name: engine.block(field(cmd, "name")) }));
            break;
          case "accept":
            out(withRef({ event: "accepted", name: engine.acceptRequest(field(cmd, "name")) }));
            break;
          case "decline":
            out(withRef({ event: "declined", name: engine.declineRequest(field(cmd, "name")) }));
            break;
          case "unblock":
            out(withRef({ event: "unblocked", name: engine.unblock(field(cmd, "name")) }));
            break;
          case "info":
            out(
              withRef({ event: "info", name: field(cmd, "name"), peer: engine.peerInfo(field(cmd, "name")) }),
            );
            break;
          case "time":
            out(withRef({ event: "time", ...engine.timeStatus() }));
            break;
          default:
            throw new CommandError("UNKNOWN_COMMAND", `unknown command "${String(cmd.cmd).slice(0, 40)}"`);
        }
      } catch (e) {
        out({
          event: "error",
          code: codeOf(e) ?? "INTERNAL",
          message: messageOf(e),
          ...(ref === undefined ? {} : { ref }),
        });
      }
    }
  } finally {
    unsubscribe();
  }
}

/** Lines of a byte stream (stdin). */
export async function* linesOf(stream: ReadableStream<Uint8Array>): AsyncIterable<string> {
  let buf = "";
  const dec = new TextDecoder();
  for await (const chunk of stream) {
    buf += dec.decode(chunk, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, i).replace(/\r$/, "");
      buf = buf.slice(i + 1);
    }
    // An endless line must not grow without bound: hand it on (it is refused as too long).
    if (buf.length > MAX_COMMAND_LINE_BYTES) {
      yield buf;
      buf = "";
    }
  }
  if (buf) yield buf;
}
