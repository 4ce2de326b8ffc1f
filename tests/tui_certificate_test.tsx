/**
 * Our certificate's state in the terminal UI: the status bar says nothing while it is valid, and says
 * renewing, lapsing soon, expired or revoked (with the fixing command) otherwise, within the width; the log
 * says each change once.
 */
import assert from "node:assert/strict";
import { cleanup, render } from "ink-testing-library";
import { StatusBar } from "../client/tui/panes.tsx";
import { formatOwnCertificate } from "../client/tui/format.ts";
import { initialState, reduce } from "../client/tui/model.ts";
import type { OwnCertificateStatus } from "../client/engine_types.ts";
import { displayWidth } from "../client/tui/width.ts";

const T = Date.UTC(2030, 5, 1);
const status = (o: Partial<OwnCertificateStatus>): OwnCertificateStatus => ({
  state: "valid",
  notAfter: T + 10 * 86400_000,
  renewAt: T,
  expiringSoon: false,
  timeUnverified: false,
  lastError: null,
  fix: null,
  ...o,
});
// deno-lint-ignore no-control-regex
const plain = (s: string | undefined) => (s ?? "").replace(/\x1b\[[0-9;]*m/g, "");

Deno.test("status bar: nothing while valid; renewing, lapsing soon, expired and revoked are said", () => {
  assert.equal(formatOwnCertificate(status({})), "");
  assert.equal(formatOwnCertificate(null), "");
  assert.equal(formatOwnCertificate(status({ state: "renewing" })), "certificate renewing");
  assert.match(formatOwnCertificate(status({ expiringSoon: true })), /certificate lapses 2030-06-11/);
  assert.match(
    formatOwnCertificate(status({ state: "expired", fix: "x" })),
    /EXPIRED: securechat enroll --renew/,
  );
  assert.match(formatOwnCertificate(status({ state: "revoked", fix: "x" })), /REVOKED: securechat enroll/);
  for (const width of [40, 80]) {
    const r = render(
      <StatusBar
        me="alice"
        peer="bob"
        ttlMs={null}
        width={width}
        hints="F1 help"
        certificate={status({ state: "expired", fix: "x" })}
      />,
    );
    const row = plain(r.lastFrame());
    r.unmount();
    assert.ok(displayWidth(row) <= width, row);
    if (width === 80) {
      assert.match(row, /CERTIFICATE EXPIRED: securechat enroll --renew/);
      assert.match(row, /F1 help/);
    }
  }
  cleanup();
});

Deno.test("log: each change of our certificate's state is said once, with the fix when it needs one", () => {
  const time = { state: "verified", time: null, uncertaintyMs: null } as unknown as Parameters<
    typeof initialState
  >[1];
  let s = initialState("alice", time);
  const ev = (st: OwnCertificateStatus) => {
    s = reduce(s, { type: "engine", event: { event: "certificate", status: st }, at: T, mono: 0 });
  };
  ev(status({}));
  ev(status({}));
  assert.equal(s.log.length, 0, "valid: nothing to say");
  ev(status({ state: "renewing", expiringSoon: true, lastError: "cannot reach the directory" }));
  ev(status({ state: "renewing", expiringSoon: true, lastError: "cannot reach the directory" }));
  assert.equal(s.log.length, 1);
  assert.match(s.log[0].text, /lapses .* not renewed yet \(cannot reach the directory\)/);
  ev(status({ notAfter: T + 40 * 86400_000 }));
  assert.match(s.log.at(-1)!.text, /certificate renewed: valid until/);
  ev(status({ state: "revoked", fix: "securechat enroll" }));
  assert.equal(s.log.at(-1)!.level, "error");
  assert.match(s.log.at(-1)!.text, /your certificate is revoked: securechat enroll/);
  assert.equal(s.certificate?.state, "revoked");
});
