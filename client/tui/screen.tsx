/**
 * Draws the whole chat screen from the UI state: top bar, contacts, conversation, peer pane, log, input and
 * status bar, or an overlay (help, verify) between the bars. No state and no engine calls here: App gives it
 * everything, so what is on screen is a function of what App knows.
 */
import { Box } from "ink";
import type { TimeStatus } from "../../clock/types.ts";
import type { Contact, PeerInfo } from "../engine_types.ts";
import type { ConversationView } from "./conversation_layout.ts";
import type { InputState } from "./input_state.ts";
import { InputBox } from "./input_box.tsx";
import type { ScreenLayout } from "./layout.ts";
import type { UiState } from "./model.ts";
import { HelpScreen, VerifyScreen } from "./overlays.tsx";
import {
  type Activity,
  ContactList,
  Lines,
  logLines,
  LogPane,
  PeerPane,
  Rule,
  StatusBar,
  TopBar,
  VRule,
} from "./panes.tsx";

export interface ChatScreenProps {
  state: UiState;
  layout: ScreenLayout;
  view: ConversationView;
  input: InputState;
  /** The contact list as shown (searched and sorted). */
  contactsShown: Contact[];
  peerInfo: PeerInfo | null;
  /** Both fingerprints while the verify screen is open. */
  verifyFingerprints: { ours: string; theirs: string | null } | null;
  /** The clock's status at this frame. */
  time: TimeStatus;
  helpOffset: number;
  /** The open conversation's peer is typing. */
  typing: boolean;
  /** Timestamps with seconds. */
  seconds?: boolean;
  /** Conversations with unread messages (Alt+1..9). */
  activity?: Activity[];
  /** Shown near the input's byte limit. */
  inputBytes?: { used: number; limit: number } | null;
}

export function ChatScreen(
  {
    state,
    layout,
    view,
    input,
    contactsShown,
    peerInfo,
    verifyFingerprints,
    time,
    helpOffset,
    typing,
    seconds = false,
    activity = [],
    inputBytes = null,
  }: ChatScreenProps,
) {
  const { columns, rows } = layout;
  const selected = state.selected;
  const contact = state.contacts.find((c) => c.name === selected);
  const inputLabel = state.closing
    ? "closing connections and withdrawing your address..."
    : state.notice?.text ??
      (inputBytes
        ? `${inputBytes.used.toLocaleString("en")}/${inputBytes.limit.toLocaleString("en")} bytes`
        : state.search && state.search.peer === selected
        ? `search "${state.search.query}": ${state.search.index + 1}/${state.search.matchIds.length} ` +
          `(Ctrl+F older, Ctrl+G newer, Esc ends)`
        : typing
        ? `${selected} is typing...`
        : state.scroll > 0
        ? `scrolled up ${view.scroll} lines (End: newest)`
        : "");
  const inputTone = state.closing
    ? "warn"
    : state.notice?.level === "error"
    ? "error"
    : state.notice?.level === "warn"
    ? "warn"
    : "dim";
  const hints = state.focus === "contacts"
    ? "type to search  Up/Down  Enter open  Esc back"
    : "F1 help  ^C quit  PgUp/PgDn scroll  Tab complete  ^N/^P next  Alt+1..9 activity  /log  /set";

  // Overlays take every row between the top bar and the status bar (the QR code needs them at 60x20).
  const overlayHeight = rows - 2;
  let main;
  if (state.overlay === "help") {
    main = <HelpScreen width={columns} height={overlayHeight} offset={helpOffset} />;
  } else if (state.overlay === "log") {
    const all = logLines(state.log, columns, seconds);
    const body = overlayHeight - 1;
    const end = Math.max(0, all.length - Math.min(state.logScroll, Math.max(0, all.length - body)));
    main = (
      <Box flexDirection="column" width={columns} height={overlayHeight}>
        <Rule
          label={`log: ${state.log.length} entries, Up/Down PgUp/PgDn scroll, End newest, Esc closes`}
          width={columns}
        />
        <Lines lines={all.slice(Math.max(0, end - body), end)} width={columns} height={body} alignBottom />
      </Box>
    );
  } else if (state.overlay !== null) {
    main = (
      <VerifyScreen
        me={state.me}
        peer={state.overlay.peer}
        ours={verifyFingerprints?.ours ?? ""}
        theirs={verifyFingerprints?.theirs ?? null}
        showing={state.overlay.showing}
        width={columns}
        height={overlayHeight}
      />
    );
  } else {
    main = (
      <Box flexDirection="row" width={columns} height={layout.mainHeight}>
        <ContactList
          contacts={contactsShown}
          unread={state.unread}
          selected={selected}
          query={state.contactQuery}
          cursor={state.contactCursor}
          focused={state.focus === "contacts"}
          width={layout.contactsWidth}
          height={layout.mainHeight}
        />
        <VRule height={layout.mainHeight} />
        {layout.conversationWidth > 0
          ? (
            selected === null
              ? (
                <Lines
                  lines={[{
                    key: "x",
                    segments: [{ text: "no conversation: /contacts or /open NAME", tone: "dim" }],
                  }]}
                  width={layout.conversationWidth}
                  height={layout.mainHeight}
                />
              )
              : (
                <Lines
                  lines={view.lines}
                  width={layout.conversationWidth}
                  height={layout.mainHeight}
                  alignBottom
                />
              )
          )
          : null}
        {layout.peerWidth > 0 && layout.conversationWidth > 0 ? <VRule height={layout.mainHeight} /> : null}
        {layout.peerWidth > 0
          ? <PeerPane info={peerInfo} contact={contact} width={layout.peerWidth} height={layout.mainHeight} />
          : null}
      </Box>
    );
  }

  const statusBar = (
    <StatusBar
      me={state.me}
      peer={selected}
      ttlMs={contact?.defaultTtlMs ?? null}
      width={columns}
      hints={state.overlay === null ? hints : "Esc close"}
      certificate={state.certificate}
    />
  );
  if (state.overlay !== null) {
    return (
      <Box flexDirection="column" width={columns} height={rows}>
        <TopBar me={state.me} time={time} width={columns} activity={activity} />
        {main}
        {statusBar}
      </Box>
    );
  }
  return (
    <Box flexDirection="column" width={columns} height={rows}>
      <TopBar me={state.me} time={time} width={columns} activity={activity} />
      {main}
      <Rule label="log (/log: all, in full)" width={columns} />
      <LogPane entries={state.log} width={columns} height={layout.logHeight} seconds={seconds} />
      <Rule label={inputLabel} width={columns} tone={inputTone} />
      <InputBox
        text={input.text}
        cursor={input.cursor}
        width={columns}
        maxRows={layout.maxInputRows}
        active={state.focus === "input" && state.overlay === null}
        placeholder={selected ? `message ${selected} (/help for commands)` : "/open NAME or /contacts"}
      />
      {statusBar}
    </Box>
  );
}
