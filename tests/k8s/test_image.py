"""docker/Dockerfile and its lock files: hadolint clean, locked dependencies per variant that
cover pyproject.toml, dependency layers before the source, bytecode compiled at build, tini as
PID 1, the GKE driver path on the GPU variant, an arm64 CPU path. (No Docker here: the build
itself runs where Docker is, `make image`.)"""

from __future__ import annotations

import re

import pytest

from tests.helpers import REPO, require_tool, run

pytestmark = pytest.mark.k8s

DOCKERFILE = REPO / "docker" / "Dockerfile"
LOCKS = {variant: REPO / "docker" / f"constraints-{variant}.txt" for variant in ("cpu", "gpu")}


def pins(path) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[A-Za-z0-9_.\-]+", name), f"{path.name}: not a pin: {line}"
            out[canonicalize_name(name)] = version
    return out


def stages(text: str) -> list[tuple[str, list[str]]]:
    """(FROM line, its instructions) per stage."""
    out: list[tuple[str, list[str]]] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if line.startswith("FROM "):
            out.append((line, []))
        elif out and line and not line.startswith("#"):
            out[-1][1].append(line)
    return out


def test_hadolint_clean():
    hadolint = require_tool("hadolint")
    proc = run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("variant", sorted(LOCKS))
def test_lock_pins_every_dependency_within_its_range(variant):
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    locked = pins(LOCKS[variant])
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    tensorflow_version = re.search(r"ARG TENSORFLOW_VERSION=(\S+)", DOCKERFILE.read_text()).group(1)
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        assert name in locked, f"{LOCKS[variant].name} does not pin {name}"
        assert dep.specifier.contains(locked[name]), f"{name}=={locked[name]} is outside {dep.specifier}"
    # The TensorFlow builds the Dockerfile installs, at the version it installs.
    builds = {"cpu": ("tensorflow", "tensorflow-cpu"), "gpu": ("tensorflow",)}[variant]
    for build in builds:
        assert locked[build] == tensorflow_version


def test_locks_share_every_pin_but_the_cuda_wheels():
    cpu, gpu = pins(LOCKS["cpu"]), pins(LOCKS["gpu"])
    assert {k: v for k, v in cpu.items() if k != "tensorflow-cpu"} == {
        k: v for k, v in gpu.items() if not k.startswith("nvidia-")
    }
    cuda = {k for k in gpu if k.startswith("nvidia-")}
    assert {"nvidia-cublas-cu12", "nvidia-cudnn-cu12", "nvidia-cuda-runtime-cu12"} <= cuda


def test_gpu_lock_matches_tensorflows_cuda_requirements():
    """Every CUDA wheel of tensorflow[and-cuda] is pinned inside the range TensorFlow asks for."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    try:
        requires = metadata.requires("tensorflow") or []
    except metadata.PackageNotFoundError:
        pytest.skip("tensorflow is not installed here")
    gpu = pins(LOCKS["gpu"])
    if metadata.version("tensorflow") != gpu["tensorflow"]:
        pytest.skip(f"installed tensorflow {metadata.version('tensorflow')} is not the locked one")
    cuda = [Requirement(r) for r in requires if "and-cuda" in r]
    assert cuda
    for req in cuda:
        name = canonicalize_name(req.name)
        assert req.specifier.contains(gpu[name]), f"{name}=={gpu[name]} outside {req.specifier}"
    assert {k for k in gpu if k.startswith("nvidia-")} == {canonicalize_name(r.name) for r in cuda}


def test_dependencies_install_locked_before_the_source_is_copied():
    [build] = [body for line, body in stages(DOCKERFILE.read_text()) if line.endswith(" AS build")]
    copies = [i for i, line in enumerate(build) if line.startswith("COPY ")]
    installs = [i for i, line in enumerate(build) if "pip install" in line]
    source = next(i for i in copies if "tuner_service" in build[i])
    deps = next(i for i in installs if "--constraint constraints.txt" in build[i])
    # Only the dependency lists are copied before the (slow) dependency install...
    assert [build[i].split()[1] for i in copies if i < deps] == [
        "pyproject.toml",
        "docker/constraints-${VARIANT}.txt",
    ]
    # ... the source after it, then the project alone, without dependencies.
    assert deps < source
    assert any("pip install --no-deps ." in build[i] for i in installs if i > source)


def test_bytecode_is_compiled_at_build_and_kept():
    text = DOCKERFILE.read_text()
    assert re.search(r"python -m compileall .*--invalidation-mode unchecked-hash /opt/venv/lib", text)
    assert "__pycache__" not in re.sub(r"(?m)^#.*$", "", text)  # nothing deletes it any more


def test_tini_is_pid_1_and_installed_from_debian():
    text = DOCKERFILE.read_text()
    assert re.search(r"apt-get install -y --no-install-recommends tini=\S+", text)
    final = stages(text)[-1][1]
    assert 'ENTRYPOINT ["tini", "--"]' in final


def test_gpu_variant_finds_gkes_driver_libraries():
    by_stage = {
        line.split(" AS ")[-1]: body for line, body in stages(DOCKERFILE.read_text()) if " AS " in line
    }
    gpu_env = " ".join(by_stage["runtime-gpu"])
    assert re.search(r"LD_LIBRARY_PATH=\S*/usr/local/nvidia/lib64", gpu_env)
    assert not any("LD_LIBRARY_PATH" in line for line in by_stage["runtime-cpu"] + by_stage["runtime"])
    final_from = stages(DOCKERFILE.read_text())[-1][0]
    assert final_from == "FROM runtime-${VARIANT}"


def test_arm64_cpu_path_and_a_clear_error_for_arm64_gpu():
    text = DOCKERFILE.read_text()
    assert "ARG TARGETARCH" in text
    assert 'cpu/arm64) tensorflow="tensorflow==${TENSORFLOW_VERSION}"' in text
    assert re.search(r"gpu/\*\) echo .*amd64 only.*exit 2", text)
    # Base images are pinned to a tag; stage names are not images.
    for line, _ in stages(text):
        image = line.split()[1]
        assert image.startswith("runtime") or re.search(
            r":\$\{PYTHON_VERSION\}-slim-\$\{DEBIAN_RELEASE\}$", image
        )
