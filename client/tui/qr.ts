/**
 * A QR code drawn with half-block characters, two module rows per text row. Light modules are drawn as ink
 * (like `qrencode -t UTF8`): terminals usually have a dark background, so the code then reads the right way
 * round on screen.
 */
import QRCode from "qrcode";
import { normalizeFingerprint } from "./format.ts";

/** Quiet-zone modules around the code (the standard asks for 4; 2 keeps it inside a 60x20 terminal and phone
 * scanners accept it). */
export const QR_MARGIN = 2;

/** What a fingerprint QR code carries: the 64 hex digits in upper case, so QR's compact alphanumeric mode
 * applies (version 3, 29x29 modules). */
export function fingerprintPayload(fp: string): string {
  return normalizeFingerprint(fp).toUpperCase();
}

/** The module matrix of a QR code for `text`: true = dark. */
export function qrMatrix(text: string): boolean[][] {
  const code = QRCode.create(text, { errorCorrectionLevel: "L" });
  const n = code.modules.size;
  const rows: boolean[][] = [];
  for (let r = 0; r < n; r++) {
    const row: boolean[] = [];
    for (let c = 0; c < n; c++) row.push(code.modules.get(r, c) === 1);
    rows.push(row);
  }
  return rows;
}

/** Text rows of the code with its quiet zone. */
export function qrLines(text: string, margin = QR_MARGIN): string[] {
  const m = qrMatrix(text);
  const n = m.length + 2 * margin;
  const light = (r: number, c: number): boolean => {
    const rr = r - margin;
    const cc = c - margin;
    if (rr < 0 || cc < 0 || rr >= m.length || cc >= m.length) return true;
    return !m[rr][cc];
  };
  const out: string[] = [];
  for (let r = 0; r < n; r += 2) {
    let line = "";
    for (let c = 0; c < n; c++) {
      const top = light(r, c);
      const bottom = r + 1 < n ? light(r + 1, c) : false;
      line += top && bottom ? "\u2588" : top ? "\u2580" : bottom ? "\u2584" : " ";
    }
    out.push(line);
  }
  return out;
}
