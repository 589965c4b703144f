"""TensorFlow's start-up noise, off unless asked for (``tuner-service -v``).

Importing TensorFlow 2.21 writes a dozen C++ log lines to the process's standard error: oneDNN,
"Could not find cuda drivers", "All log messages before absl::InitializeLog() is called...",
CPU-instruction hints; later a device probe adds ``E0000 ... failed call to cuInit``. The later
ones obey ``TF_CPP_MIN_LOG_LEVEL`` (3: fatal only); the import-time ones are written through absl
before it is initialised and obey nothing, straight to file descriptor 2. So, by default, every
entry point (:func:`configure`, called first by ``cli.main``) sets the level before TensorFlow
loads (children inherit it through the environment) and filters those C++ lines out of file
descriptor 2 while ``import tensorflow`` runs, whichever module imports it first. Anything else
written meanwhile (a Python warning, an import error) still gets through.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

# The environment every process gets unless verbose (set before TensorFlow loads).
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}
# absl/glog C++ lines (I0000 00:00:1796102411.427285   19314 port.cc:153] ...) and the
# continuation or preamble lines TensorFlow prints with them; fatal (F) lines are kept.
_NOISE = re.compile(
    r"^(?:[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: )"
)


def configure(verbose: bool, environ: MutableMapping[str, str] | None = None) -> None:
    """Quiet TensorFlow in this process and its children, unless ``verbose``."""
    env = os.environ if environ is None else environ
    if verbose:
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    for key, value in QUIET_ENV.items():
        env.setdefault(key, value)
    if environ is None and "tensorflow" not in sys.modules:
        install_import_filter()


def is_noise(line: str) -> bool:
    return bool(_NOISE.match(line))


@contextmanager
def stderr_filtered() -> Iterator[None]:
    """Collect what is written to file descriptor 2 meanwhile; replay all but the noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode(errors="replace").splitlines(True)
                if not is_noise(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """The real loader of ``tensorflow``, run with standard error filtered."""

    def __init__(self, loader: Any):
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader  # TensorFlow's own code sees its real loader
        with stderr_filtered():
            self.loader.exec_module(module)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as usual, once, and wraps its loader in :class:`_QuietLoader`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install_import_filter() -> None:
    if not any(isinstance(f, _TensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowFinder())
