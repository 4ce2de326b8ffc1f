#!/usr/bin/env bash
# Release build check that works without downloading Deno's `denort` runtime: the module graph embeds
# (Linux x64/arm64 archives built with DENORT_BIN = this deno), nothing is loaded from beside main.ts at run
# time, and `securechat --version` answers. It does NOT prove that the compiled binaries run: that needs the
# real denort, which the release workflow (.github/workflows/release.yml) downloads. See docs/usage-serve.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUST_BACKTRACE=0 NO_COLOR=1
deno task compile --check
deno run --allow-read --allow-env main.ts --version
