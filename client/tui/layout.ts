/**
 * Screen geometry: how the terminal's rows and columns are shared between the panes. Pure, so every size
 * (including the 60x20 minimum) can be checked without drawing.
 */
import type { PeerPaneMode } from "./model.ts";

export const MIN_COLUMNS = 60;
export const MIN_ROWS = 20;
/** From this width the peer pane fits beside the conversation when asked for (/peer, pane=shown). */
export const WIDE_COLUMNS = 120;
/** Fits a fingerprint as four rows of seven groups of four hex digits, and the cipher name. */
export const PEER_WIDTH = 34;
/** Cells of conversation the peer pane must leave for it to open by itself (pane=auto): text first. */
export const COMFORTABLE_CONVERSATION = 80;
/** From this width the peer pane opens by itself: contacts, the conversation at its comfortable width, the
 * pane, the separators and the last column (never drawn into). */
export const PEER_AUTO_COLUMNS = 22 + 1 + COMFORTABLE_CONVERSATION + 1 + PEER_WIDTH + 1;

export interface ScreenLayout {
  tooSmall: boolean;
  /** Cells drawn per row: one less than the terminal has. A terminal that draws a character wider than we
   * measured it then still has a free cell for it instead of wrapping the row and scrolling the screen. */
  columns: number;
  rows: number;
  /** Rows of the area between the top bar and the input (contacts, conversation, peer pane). */
  mainHeight: number;
  contactsWidth: number;
  /** 0 when the peer pane takes the conversation's place (narrow terminal, /peer). */
  conversationWidth: number;
  /** 0 when hidden. */
  peerWidth: number;
  logHeight: number;
  inputHeight: number;
  maxInputRows: number;
}

/** Whether the peer pane is on screen for this mode and width. */
export function peerVisible(mode: PeerPaneMode, columns: number): boolean {
  return mode === "shown" || (mode === "auto" && columns >= PEER_AUTO_COLUMNS);
}

export function computeLayout(
  terminalColumns: number,
  rows: number,
  peerMode: PeerPaneMode,
  inputRowsWanted: number,
): ScreenLayout {
  const tooSmall = terminalColumns < MIN_COLUMNS || rows < MIN_ROWS;
  const columns = Math.max(1, terminalColumns - 1);
  const logHeight = rows >= 40 ? 6 : rows >= 28 ? 4 : 3;
  const maxInputRows = rows >= 30 ? 6 : 3;
  const inputHeight = Math.max(1, Math.min(inputRowsWanted, maxInputRows));
  // top bar, rule above the log, rule above the input, status bar.
  const mainHeight = Math.max(1, rows - 4 - logHeight - inputHeight);
  const contactsWidth = columns >= 100 ? 22 : 14;
  const rest = columns - contactsWidth - 1;
  let conversationWidth = rest;
  let peerWidth = 0;
  if (peerVisible(peerMode, terminalColumns)) {
    if (terminalColumns >= WIDE_COLUMNS) {
      peerWidth = PEER_WIDTH;
      conversationWidth = rest - peerWidth - 1;
    } else {
      peerWidth = rest;
      conversationWidth = 0;
    }
  }
  return {
    tooSmall,
    columns,
    rows,
    mainHeight,
    contactsWidth,
    conversationWidth,
    peerWidth,
    logHeight,
    inputHeight,
    maxInputRows,
  };
}
