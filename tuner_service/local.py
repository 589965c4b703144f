"""`tuner-service run`: one chief and N workers as local processes, wired like pods.

Each process is started as ``python -m tuner_service chief|worker`` with the same study file and
overrides, and learns its role only from keras-tuner's environment contract
(``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``), exactly as the
Kubernetes pods do. Output goes to ``<directory>/<name>/logs/``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tuner_service import process
from tuner_service.process import Role, UsageError
from tuner_service.spec import StudySpec
from tuner_service.study import files
from tuner_service.study.ledger import read_snapshot


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: IO[Any]

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()


@dataclass
class LocalRun:
    spec: StudySpec
    config: str | None
    overrides: list[str]
    workers: int = 2
    host: str = "127.0.0.1"
    procs: list[Proc] = field(default_factory=list)
    oracle_port: int = 0
    metrics_port: int = 0

    @property
    def log_dir(self) -> Path:
        return self.spec.project_dir / files.LOGS

    def _argv(self, role: str) -> list[str]:
        argv = [sys.executable, "-m", "tuner_service", role]
        if self.config:
            argv += ["--config", self.config]
        for item in self.overrides:
            argv += ["--set", item]
        return argv

    def _spawn(self, name: str, role: str, env: dict[str, str]) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in wait()
        popen = subprocess.Popen(
            self._argv(role),
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        self.oracle_port = free_port(self.host)
        chief_env = Role("chief", self.host, self.oracle_port).env()
        if self.spec.metrics_port:
            self.metrics_port = free_port(self.host)
            chief_env[process.METRICS_PORT] = str(self.metrics_port)
        if self.spec.status_port:
            chief_env[process.STATUS_PORT] = str(free_port(self.host))
        self._spawn("chief", "chief", chief_env)
        for i in range(self.workers):
            env = Role(f"worker-{i}", self.host, self.oracle_port).env()
            env[process.METRICS_PORT] = str(free_port(self.host)) if self.spec.metrics_port else "0"
            self._spawn(f"worker-{i}", "worker", env)

    @property
    def chief(self) -> Proc:
        return self.procs[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Workers first (so they stop asking), then the chief, which saves its state."""
        for proc in self.procs[1:] + self.procs[:1]:
            if proc.returncode is None:
                proc.popen.send_signal(sig)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()

    def wait(
        self,
        on_tick: Callable[[dict[str, Any] | None, list[Proc]], None] | None = None,
        tick: float = 1.0,
    ) -> int:
        """Wait for the chief; return its exit code, or 1 if any worker failed."""
        try:
            while self.chief.returncode is None:
                if on_tick:
                    on_tick(read_snapshot(self.spec.project_dir), self.procs)
                time.sleep(tick)
            if self.chief.returncode != 0:
                # The search cannot go on without its chief: do not let workers wait for it.
                for proc in self.procs[1:]:
                    if proc.returncode is None:
                        proc.popen.terminate()
            # The chief exits after the last trial; healthy workers were told STOPPED already.
            for proc in self.procs[1:]:
                try:
                    proc.popen.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.popen.terminate()
                    proc.popen.wait()
            if on_tick:
                on_tick(read_snapshot(self.spec.project_dir), self.procs)
        finally:
            for proc in self.procs:
                proc.log.close()
        code = self.chief.returncode or 0
        if code == 0 and any(p.returncode not in (0, -signal.SIGTERM) for p in self.procs[1:]):
            return 1
        return code


def run_search(
    spec: StudySpec, config: str | None, overrides: list[str], *, workers: int, show_progress: bool = True
) -> int:
    """A local chief + ``workers`` search with a live table (``run`` and ``experiment``); its exit code."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    from tuner_service import data

    data.check(spec.data, spec.seed)  # bad data: one line here, exit 2, before any process starts
    if not spec.is_seed_model:
        # Fail fast, in this process, on a user model that cannot be imported.
        from tuner_service.models import load_hypermodel

        load_hypermodel(spec.model)
    from tuner_service.progress import Progress

    run = LocalRun(spec, config, overrides, workers=workers)
    print(f"study {spec.name!r}: chief + {workers} workers, logs in {run.log_dir}")
    run.start()
    if run.metrics_port:
        print(f"metrics: http://{run.host}:{run.metrics_port}/metrics")
    if spec.status_port:
        print(f"watch it: tuner-service status --config {config} --watch")
    progress = Progress(spec, enabled=show_progress)
    try:
        with progress:
            code = run.wait(progress.update)
    except KeyboardInterrupt:
        print("interrupted: stopping workers and chief...", file=sys.stderr)
        run.stop()
        return process.EXIT_INTERRUPTED
    if code != 0:
        print(f"search failed (exit {code}); see {run.log_dir}", file=sys.stderr)
    return code
