#!/usr/bin/env bash
# Install Debian's Chromium for the report screenshot test (tests/test_report.py) and
# scripts/screenshot_report.sh, non-interactively.
# Usage: bash scripts/ci-browser.sh        (as root, or with sudo available)
set -euo pipefail

if command -v chromium >/dev/null; then
  echo "ci-browser: $(chromium --version 2>/dev/null | head -1)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "ci-browser: $(chromium --version 2>/dev/null | head -1)"
