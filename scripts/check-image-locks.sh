#!/usr/bin/env bash
# Check docker/constraints-{cpu,gpu}.txt against the package index without Docker: resolve what
# docker/Dockerfile installs for each variant and architecture (cpu/amd64, gpu/amd64, cpu/arm64)
# for Python 3.12 wheels, with `pip install --dry-run --report`, and fail if the resolution fails
# or installs a distribution that the lock does not pin, or at another version. Needs the index
# (it downloads the wheels pip needs to read, TensorFlow's included; nothing is installed).
# `make image-locks`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"  # any Python with pip >= 23 (for --report); the lock is for 3.12 anyway
TF="$(sed -n 's/^ARG TENSORFLOW_VERSION=//p' "$ROOT/docker/Dockerfile")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -c "import tomllib, sys; deps = tomllib.load(open(sys.argv[1], 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.lower().startswith('tensorflow')))" \
    "$ROOT/pyproject.toml" > "$work/requirements.txt"

check() { # check VARIANT ARCH TENSORFLOW-REQUIREMENT
    local variant="$1" arch="$2" tensorflow="$3" platforms=()
    # Explicit platforms match tags literally: the legacy alias manylinux2014 is a tag of its own.
    for tag in manylinux2014 manylinux_2_17 manylinux_2_27 manylinux_2_28; do
        platforms+=(--platform "${tag}_${arch}")
    done
    "$PYTHON" -m pip install --dry-run --ignore-installed --quiet --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" --target "$work/target" --report "$work/report.json" \
        --constraint "$ROOT/docker/constraints-$variant.txt" "$tensorflow" --requirement "$work/requirements.txt"
    python3 - "$work/report.json" "$ROOT/docker/constraints-$variant.txt" "$variant/$arch" <<'PY'
import json, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pins = {}
for line in open(sys.argv[2]):
    line = line.split("#", 1)[0].strip()
    if line:
        name, _, version = line.partition("==")
        pins[norm(name)] = version
installed = {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
bad = {n: (v, pins.get(n)) for n, v in installed.items() if pins.get(n) != v}
print(f"{sys.argv[3]}: {len(installed)} distributions, {'all pinned' if not bad else f'NOT PINNED: {bad}'}")
sys.exit(1 if bad else 0)
PY
}

check cpu x86_64 "tensorflow-cpu==$TF"
check gpu x86_64 "tensorflow[and-cuda]==$TF"
check cpu aarch64 "tensorflow==$TF"
