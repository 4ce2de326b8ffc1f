/**
 * The input box: draws the editing model (input_state.ts) with a block cursor. Key handling lives in the App,
 * which owns the state; this component only draws, so tests can render it with any text and cursor.
 */
import { Box, Text } from "ink";
import { layoutInput, splitAtColumn } from "./input_state.ts";
import { displayWidth } from "./width.ts";

/** The prompt before the first row; continuation rows are indented by its width. */
export const PROMPT = "> ";

/** Rows the box would take for `text` at `width`, capped at `maxRows`. */
export function inputRows(text: string, width: number, maxRows: number): number {
  return Math.min(maxRows, layoutInput(text, text.length, width - PROMPT.length).rows.length);
}

export function InputBox(
  { text, cursor, width, maxRows, placeholder, active = true }: {
    text: string;
    cursor: number;
    width: number;
    maxRows: number;
    placeholder?: string;
    active?: boolean;
  },
) {
  const inner = Math.max(2, width - PROMPT.length);
  const view = layoutInput(text, cursor, inner);
  const rows = Math.min(maxRows, view.rows.length);
  // Scroll so the cursor row is always visible.
  const first = Math.max(0, Math.min(view.cursorRow - rows + 1, view.rows.length - rows));
  const shown = view.rows.slice(first, first + rows);
  return (
    <Box flexDirection="column" width={width} height={rows}>
      {shown.map((row, i) => {
        const prefix = i === 0 && first === 0 ? PROMPT : " ".repeat(PROMPT.length);
        const isCursorRow = active && first + i === view.cursorRow;
        if (text === "" && placeholder && i === 0) {
          return (
            <Text key={i} wrap="truncate">
              {prefix}
              {active ? <Text inverse></Text> : " "}
              <Text dimColor>{placeholder.slice(0, Math.max(0, inner - 1))}</Text>
            </Text>
          );
        }
        if (!isCursorRow) {
          return <Text key={i} wrap="truncate">{prefix + row}</Text>;
        }
        const [before, at, after] = splitAtColumn(row, view.cursorCol);
        const pad = Math.max(0, inner - displayWidth(before + at + after));
        return (
          <Text key={i} wrap="truncate">
            {prefix + before}
            <Text inverse>{at}</Text>
            {after + " ".repeat(pad)}
          </Text>
        );
      })}
    </Box>
  );
}
