#!/usr/bin/env bash
# CI hook for the Kubernetes packaging (called from .ci/run): installs the offline tool chain
# that tests/k8s needs (helm v4, kubectl v1.35, kubernetes-validate, checkov) into .tools/.
# Idempotent and quick when the tools are already there.
#
#   scripts/ci-k8s.sh          install the tools
#   scripts/ci-k8s.sh --test   install, then run the k8s test suite (pytest -m k8s tests/k8s)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# None of these tools needs the network after installation; make sure they do not try.
export BC_SKIP_MAPPING=TRUE            # checkov: no Bridgecrew/Prisma mapping download
export CHECKOV_SKIP_DOWNLOAD=TRUE
export HELM_NO_PLUGINS=1

# pip prints a line per index location that this machine's config lists but lacks; keep
# real errors, drop that noise.
"$ROOT/scripts/install-k8s-tools.sh" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

if [[ "${1:-}" == "--test" ]]; then
    PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
    [[ -x "$PYTHON" ]] || PYTHON=python3
    exec "$PYTHON" -m pytest -m k8s tests/k8s -q
fi
