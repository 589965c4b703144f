#!/usr/bin/env bash
# Install Prometheus and promtool for the monitoring tests (tests/monitoring/), non-interactively.
# Debian's `prometheus` package ships both binaries. The package's service is never started here:
# the tests start their own server on a loopback port with a temporary config.
# Usage: bash scripts/ci-monitoring.sh        (as root, or with sudo available)
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  echo "ci-monitoring: $(prometheus --version 2>&1 | head -1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Keep dpkg from starting the packaged service (policy-rc.d exit 101 = "not allowed"), but only
# if no policy is in place already; remove ours afterwards.
POLICY=/usr/sbin/policy-rc.d
OURS=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod +x "$POLICY"
  OURS=1
fi
cleanup() { if [ "$OURS" = 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null

command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "ci-monitoring: $(prometheus --version 2>&1 | head -1)"
