/**
 * The screen's panes. Each one is given its exact size and draws exactly that many rows, each cut to the
 * width, so the layout never depends on Ink re-wrapping text and stays right at any size down to 60x20.
 */
import { Box, Text } from "ink";
import { createContext, useContext } from "react";
import type { TimeStatus } from "../../clock/types.ts";
import type { Contact, OwnCertificateStatus, PeerInfo } from "../engine_types.ts";
import type { ScreenLine, Segment, Tone } from "./conversation_layout.ts";
import {
  formatClock,
  formatOwnCertificate,
  formatTimeStatus,
  formatTtl,
  formatUtc,
  groupFingerprint,
  pinLabel,
} from "./format.ts";
import type { LogEntry } from "./model.ts";
import { displayText, displayWidth, fit, truncate, wrapText } from "./width.ts";

interface ToneStyle {
  color?: string;
  dimColor?: boolean;
  bold?: boolean;
  inverse?: boolean;
}

const TONES: Record<Tone, ToneStyle> = {
  normal: {},
  dim: { dimColor: true },
  me: { color: "cyan", bold: true },
  peer: { color: "magenta", bold: true },
  accent: { color: "yellow", bold: true },
  warn: { color: "yellow" },
  error: { color: "red", bold: true },
  good: { color: "green" },
  match: { inverse: true },
  current: { inverse: true, bold: true, color: "yellow" },
};

// Without colour (NO_COLOR, /set colors off) tones keep only what is not colour: bold, dim, inverse.
const MONO_TONES: Record<Tone, ToneStyle> = Object.fromEntries(
  Object.entries(TONES).map(([k, v]) => [k, { ...v, color: undefined }]),
) as Record<Tone, ToneStyle>;

/** The style of a tone; without colour only bold, dim and inverse are left. */
export function toneStyle(tone: Tone, monochrome: boolean): ToneStyle {
  return (monochrome ? MONO_TONES : TONES)[tone];
}

/** True when the screen is drawn without colours. */
export const MonochromeContext = createContext(false);

/** One screen row made of styled segments, cut to `width` cells. */
export function Row({ segments, width }: { segments: Segment[]; width: number }) {
  const tones = useContext(MonochromeContext) ? MONO_TONES : TONES;
  let used = 0;
  const parts: Segment[] = [];
  for (const s of segments) {
    if (used >= width) break;
    // Every character reaching the terminal passes here: controls and bidi overrides are neutralised even
    // if a caller forgot (a peer's name inside an error message, a certificate field...).
    const t = truncate(displayText(s.text).replace(/\n/g, " "), width - used, "");
    used += displayWidth(t);
    parts.push({ text: t, tone: s.tone });
  }
  if (used < width) parts.push({ text: " ".repeat(width - used), tone: "normal" });
  return (
    <Text wrap="truncate">
      {parts.map((p, i) => <Text key={i} {...tones[p.tone]}>{p.text}</Text>)}
    </Text>
  );
}

/** Exactly `height` rows: the given lines, then blank rows. */
export function Lines(
  { lines, width, height, alignBottom = false }: {
    lines: ScreenLine[];
    width: number;
    height: number;
    alignBottom?: boolean;
  },
) {
  const shown = lines.slice(0, height);
  const blanks = Array.from({ length: height - shown.length }, (_, i): ScreenLine => ({
    key: `blank:${i}`,
    segments: [],
  }));
  const all = alignBottom ? [...blanks, ...shown] : [...shown, ...blanks];
  return (
    <Box flexDirection="column" width={width} height={height}>
      {all.map((l) => <Row key={l.key} segments={l.segments} width={width} />)}
    </Box>
  );
}

const line = (key: string, ...segments: Segment[]): ScreenLine => ({ key, segments });
const seg = (text: string, tone: Tone = "normal"): Segment => ({ text, tone });

const TIME_TONE: Record<TimeStatus["state"], Tone> = { verified: "good", stale: "warn", unverified: "error" };

/** Conversations with unread messages, in the order Alt+1..9 jumps to them. */
export interface Activity {
  name: string;
  unread: number;
}

export function TopBar(
  { me, time, width, activity = [] }: { me: string; time: TimeStatus; width: number; activity?: Activity[] },
) {
  const left = ` securechat \u00b7 ${displayText(me)} `;
  const right = ` ${formatTimeStatus(time)} `;
  // The activity list takes what the name and the clock leave (the clock is never cut for it).
  const room = Math.max(0, width - displayWidth(left) - displayWidth(right) - 1);
  let act = "";
  activity.slice(0, 9).forEach((a, i) => {
    const item = `${act ? " " : "act "}${i + 1}:${displayText(a.name)}(${a.unread > 99 ? "99+" : a.unread})`;
    if (displayWidth(act + item) <= room) act += item;
  });
  const gap = Math.max(1, width - displayWidth(left) - displayWidth(act) - displayWidth(right));
  return (
    <Row
      width={width}
      segments={[
        seg(left, "accent"),
        seg(act, "warn"),
        seg(" ".repeat(gap)),
        seg(right, TIME_TONE[time.state]),
      ]}
    />
  );
}

export function StatusBar(
  { me, peer, ttlMs, width, hints, certificate }: {
    me: string;
    peer: string | null;
    ttlMs: number | null;
    width: number;
    hints: string;
    /** Our certificate: said before the hints when it needs attention (renewing, lapsing, expired, revoked). */
    certificate?: OwnCertificateStatus | null;
  },
) {
  const where = peer ? ` ${displayText(me)} \u2192 ${displayText(peer)}` : ` ${displayText(me)}`;
  const ttl = peer ? ` \u00b7 ttl ${ttlMs === null ? "off" : formatTtl(ttlMs)}` : "";
  const left = where + ttl + " ";
  const certText = formatOwnCertificate(certificate);
  const cert = certText ? `\u00b7 ${certText} ` : "";
  const certTone: Tone = certificate?.state === "expired" || certificate?.state === "revoked"
    ? "error"
    : "warn";
  const room = Math.max(0, width - displayWidth(left));
  const certShown = truncate(cert, room);
  const rest = Math.max(0, room - displayWidth(certShown));
  return (
    <Row
      width={width}
      segments={[seg(left, "me"), seg(certShown, certTone), seg(fit(" " + hints, rest), "dim")]}
    />
  );
}

/** Marker after a contact's name: key changed, verified, or not verified yet. */
export function pinMark(pin: Contact["pin"]): Segment {
  switch (pin) {
    case "changed":
      return seg("!", "error");
    case "verified":
      return seg("\u2713", "good");
    default:
      return seg("?", "dim");
  }
}

/** Index of the first contact on screen: the cursor (or the open conversation) is kept inside the rows. */
export function contactWindowStart(
  contacts: readonly Contact[],
  selected: string | null,
  cursor: number,
  focused: boolean,
  height: number,
): number {
  const rows = height - 1;
  const focusIndex = focused ? cursor : Math.max(0, contacts.findIndex((c) => c.name === selected));
  return Math.max(0, Math.min(focusIndex - rows + 1, contacts.length - rows));
}

export function ContactList(
  { contacts, unread, selected, query, cursor, focused, width, height }: {
    contacts: Contact[];
    unread: Record<string, number>;
    selected: string | null;
    query: string;
    cursor: number;
    focused: boolean;
    width: number;
    height: number;
  },
) {
  const head = focused
    ? line("head", seg(fit(`search: ${query}\u258f`, width), "accent"))
    : line("head", seg(fit(`Contacts (${contacts.length})`, width), "dim"));
  const rows = height - 1;
  const first = contactWindowStart(contacts, selected, cursor, focused, height);
  const body = contacts.slice(first, first + rows).map((c, i) => {
    const n = unread[c.name] ?? c.unread;
    const badge = n > 0 ? ` ${n > 99 ? "99+" : n}` : "";
    const isCursor = focused && first + i === cursor;
    const isOpen = c.name === selected;
    const nameW = Math.max(1, width - 4 - displayWidth(badge));
    const segments: Segment[] = [
      seg(isOpen ? "\u25b8" : " ", "accent"),
      // Blocked: a barred circle (never online); revoked: a cross.
      c.blocked
        ? seg("\u2298", "warn")
        : c.request
        ? seg("\u2709", "warn")
        : c.revoked
        ? seg("\u00d7", "error")
        : seg(c.online ? "\u25cf" : "\u25cb", c.online ? "good" : "dim"),
      seg(" "),
      seg(fit(displayText(c.name), nameW), isCursor ? "accent" : isOpen ? "me" : "normal"),
      pinMark(c.pin),
      seg(badge, "accent"),
    ];
    return line(`c:${c.name}`, ...segments);
  });
  if (contacts.length === 0) {
    body.push(line("none", seg(query ? "no match" : "nobody yet", "dim")));
  }
  return <Lines lines={[head, ...body]} width={width} height={height} />;
}

export function peerLines(info: PeerInfo | null, contact: Contact | undefined, width: number): ScreenLine[] {
  if (!contact && !info) return [line("none", seg("no conversation open", "dim"))];
  const name = displayText(info?.name ?? contact?.name ?? "");
  const revoked = info?.revoked === true || contact?.revoked === true;
  // A revoked peer is never shown online, whatever a stale session or phonebook entry says.
  const online = !revoked && (info ? info.connected : contact?.online ?? false);
  const where = revoked
    ? "REVOKED"
    : info
    ? (online ? "connected" : "not connected")
    : online
    ? "online"
    : "offline";
  const pin = info?.pin ?? contact?.pin ?? "first-use";
  const out: ScreenLine[] = [
    line(
      "name",
      seg(name, "peer"),
      seg(
        `  ${revoked ? "\u00d7" : online ? "\u25cf" : "\u25cb"} ${where}`,
        revoked ? "error" : online ? "good" : "dim",
      ),
    ),
    line(
      "pin",
      seg("pin      "),
      seg(pinLabel(pin), pin === "verified" ? "good" : pin === "changed" ? "error" : "warn"),
    ),
  ];
  if (!info) {
    out.push(line("nocert", seg("certificate not seen yet", "dim")));
    return out;
  }
  const validTone: Tone = info.validNow === true ? "good" : info.validNow === false ? "error" : "warn";
  const validText = info.validNow === true
    ? "valid now (trusted time)"
    : info.validNow === false
    ? "NOT valid now"
    : "unknown: time unverified";
  // Most important first, so a short pane (60x20) still shows validity, revocation and the fingerprint.
  out.push(
    line("vn", seg("validity "), seg(validText, validTone)),
    line(
      "rev",
      seg("revoked  "),
      seg(info.revoked ? "YES - REVOKED" : "no", info.revoked ? "error" : "good"),
    ),
    line(
      "tls",
      seg("TLS      "),
      seg(info.tlsVersion ?? "not connected", info.tlsVersion ? "normal" : "dim"),
    ),
    // On a row of its own: TLS_AES_256_GCM_SHA384 is 22 cells and must never be cut.
    ...(info.cipher ? [line("cipher", seg("cipher   "), seg(displayText(info.cipher)))] : []),
    // How the session runs: direct (and over which kind of address) or through which relay.
    ...(info.path
      ? displayWidth(info.path) + 9 <= width
        ? [line("path", seg("path     "), seg(displayText(info.path)))]
        : [
          line("path", seg("path")),
          ...wrapText(displayText(info.path), width).map((t, i) => line(`path:${i}`, seg(t))),
        ]
      : []),
    line("fph", seg("key SHA-256 fingerprint", "dim")),
    ...fingerprintLines("fp", info.fingerprint, width, pin === "changed" ? "error" : "normal"),
  );
  if (info.pinnedFingerprint && info.pinnedFingerprint !== info.fingerprint) {
    out.push(line("pfh", seg("pinned (old) key fingerprint", "warn")));
    out.push(...fingerprintLines("pfp", info.pinnedFingerprint, width, "warn"));
  }
  out.push(
    line("subj", seg("subject  "), seg(displayText(info.subject))),
    line("iss", seg("issuer   "), seg(displayText(info.issuer))),
    ...(displayWidth(info.serial) + 9 <= width
      ? [line("ser", seg("serial   "), seg(displayText(info.serial)))]
      : [
        line("ser", seg("serial")),
        ...wrapText(displayText(info.serial), width).map((t, i) => line(`ser:${i}`, seg(t))),
      ]),
    line("nb", seg("from     "), seg(formatUtc(info.notBefore))),
    line("na", seg("until    "), seg(formatUtc(info.notAfter))),
  );
  return out;
}

/** A fingerprint in groups of four, as many groups per row as fit. */
export function fingerprintLines(key: string, fp: string, width: number, tone: Tone): ScreenLine[] {
  const groups = groupFingerprint(fp).split(" ");
  const perRow = Math.max(1, Math.floor((width + 1) / 5));
  const out: ScreenLine[] = [];
  for (let i = 0; i < groups.length; i += perRow) {
    out.push(line(`${key}:${i}`, seg(groups.slice(i, i + perRow).join(" "), tone)));
  }
  return out;
}

export function PeerPane(
  { info, contact, width, height }: {
    info: PeerInfo | null;
    contact: Contact | undefined;
    width: number;
    height: number;
  },
) {
  return <Lines lines={peerLines(info, contact, width)} width={width} height={height} />;
}

const LEVEL_TONE: Record<LogEntry["level"], Tone> = { info: "dim", warn: "warn", error: "error" };

export function LogPane(
  { entries, width, height, seconds = false }: {
    entries: LogEntry[];
    width: number;
    height: number;
    seconds?: boolean;
  },
) {
  const shown = entries.slice(-height).map((e) =>
    line(
      `log:${e.seq}`,
      seg(formatClock(e.at, seconds) + " ", "dim"),
      seg(displayText(e.text).replace(/\n/g, " "), LEVEL_TONE[e.level]),
    )
  );
  return <Lines lines={shown} width={width} height={height} alignBottom />;
}

/** The whole log, every entry wrapped in full (the /log screen), oldest first. */
export function logLines(entries: LogEntry[], width: number, seconds = false): ScreenLine[] {
  const out: ScreenLine[] = [];
  const stamp = seconds ? 9 : 6;
  for (const e of entries) {
    const tone = LEVEL_TONE[e.level] === "dim" ? "normal" : LEVEL_TONE[e.level];
    wrapText(displayText(e.text), Math.max(1, width - stamp)).forEach((t, i) =>
      out.push(
        line(
          `log:${e.seq}:${i}`,
          seg(i === 0 ? formatClock(e.at, seconds) + " " : " ".repeat(stamp), "dim"),
          seg(t, tone),
        ),
      )
    );
  }
  return out;
}

/** A horizontal rule with a label, e.g. "── log ──". */
export function Rule({ label, width, tone = "dim" }: { label: string; width: number; tone?: Tone }) {
  const head = label ? `\u2500 ${label} ` : "";
  const rest = Math.max(0, width - displayWidth(head));
  return (
    <Row width={width} segments={[seg(truncate(head, width), tone), seg("\u2500".repeat(rest), "dim")]} />
  );
}

/** A one-cell-wide vertical separator of `height` rows. */
export function VRule({ height }: { height: number }) {
  return (
    <Box flexDirection="column" width={1} height={height}>
      {Array.from({ length: height }, (_, i) => <Text key={i} dimColor>│</Text>)}
    </Box>
  );
}
