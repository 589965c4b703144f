#!/usr/bin/env bash
# Render a report.html in headless Chromium and save a PNG of what a person sees.
#   scripts/screenshot_report.sh runs/mlp-quick/report.html [out.png] [width,height]
# Needs Debian's chromium (apt-get install -y chromium). Everything is local: the report is
# self-contained, and Chromium's network features are switched off.
set -euo pipefail
report=${1:?usage: $0 REPORT.html [OUT.png] [WIDTH,HEIGHT]}
out=${2:-${report%.html}.png}
size=${3:-1200,3600}
[[ -f $report ]] || { echo "$0: no such file: $report" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[[ -n $browser ]] || { echo "$0: chromium not found (apt-get install -y chromium)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
  --user-data-dir="$profile" --screenshot="$(realpath -m "$out")" --window-size="$size" \
  "file://$(realpath "$report")" >/dev/null 2>&1
[[ -s $out ]] || { echo "$0: chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
