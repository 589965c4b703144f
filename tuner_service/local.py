"""`tuner-service run`: one chief and N workers as local processes, wired like pods.

Each process is started as ``python -m tuner_service chief|worker`` with the same study file and
overrides, and learns its role only from keras-tuner's environment contract
(``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``), exactly as the
Kubernetes pods do. Output goes to ``<directory>/<name>/logs/``.

What ``run`` promises (docs/fault-tolerance.md has the table):

- The chief listens on the study's ``metrics_port`` and ``status_port`` (0: a free one); both are
  checked before anything starts or is written, and a busy one is named (exit 2).
- No child outlives ``run``: Ctrl-C, SIGTERM and SIGHUP stop the workers, then the chief (which
  saves its state); if ``run`` itself is killed (SIGKILL), the kernel sends each child SIGTERM
  (:func:`tuner_service.process.die_with_parent`).
- ``run`` never waits for nobody: once no worker is alive while trials remain, it stops the chief
  within seconds (state saved) and exits 1 with the last error line of each worker's log.
- Its verdict is the search's: 0 when the search finished, however many workers died on the
  way; each is named, with where its trial went.
- A finished study is not run again by accident: ``--fresh`` starts over, a larger
  ``max_trials`` extends it; otherwise ``run`` says so and shows the results.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tuner_service import process
from tuner_service.ports import check_free, free_port
from tuner_service.process import Role, UsageError
from tuner_service.spec import StudySpec
from tuner_service.study import endpoints, files
from tuner_service.study.ledger import read_snapshot

__all__ = ["LocalRun", "free_port", "run_search"]

# Seconds `run` gives the chief, once no worker is alive and none was released (exit 0), to
# record the end of the search itself before it is stopped: its ledger is written 0.25 s after
# a change, so a chief whose search did end is seen to have ended well within this.
NO_WORKER_GRACE = 3.0
# Seconds the chief may take, once every worker was released, to record the end itself (it
# waits up to 10 s for workers that have not heard yet, see chief.Chief.linger).
CHIEF_WIND_DOWN = 30.0
# Seconds a stopped process gets to exit before it is killed: workers lose at most the epoch
# in progress; the chief saves oracle.json and service_state.json.
WORKER_STOP_TIMEOUT = 10.0
CHIEF_STOP_TIMEOUT = 30.0
# Seconds workers get to exit after the chief has (they were told STOPPED before it exited).
WORKER_EXIT_TIMEOUT = 30.0


class Stopped(Exception):
    """A signal (SIGTERM, SIGHUP) asked ``run`` to stop; SIGINT raises KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    trial_id: str | None = None  # the trial it trained when last seen alive (from the ledger)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def how_it_ended(self) -> str:
        code = self.returncode
        if code is None:
            return "is still running"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited {code}"

    def last_error(self) -> str:
        """The last line of its log that says something (not an INFO/DEBUG log line)."""
        return last_error_line(self.log_path)


def last_error_line(log_path: Path, tail_bytes: int = 16384) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        line = line.strip()
        if line and not any(f" {level} " in line[:40] for level in ("INFO", "DEBUG")):
            return line
    return ""


@dataclass
class LocalRun:
    spec: StudySpec
    config: str | None
    overrides: list[str]
    workers: int = 2
    host: str = "127.0.0.1"
    verbose: bool = False
    procs: list[Proc] = field(default_factory=list)
    oracle_port: int = 0
    metrics_port: int = 0
    status_port: int = 0
    # Set when `run` stopped the chief because no worker was left to train the remaining trials.
    abandoned: bool = False
    stopped: set[str] = field(default_factory=set)  # processes `run` itself told to stop

    @property
    def log_dir(self) -> Path:
        return self.spec.project_dir / files.LOGS

    def plan_ports(self) -> None:
        """The chief's ports: the study's (checked now, before anything starts), or free ones for 0."""
        check_free(
            self.host,
            {"metrics_port": self.spec.metrics_port, "status_port": self.spec.status_port},
            hint="stop what uses it, or pick another (--set metrics_port=0 / status_port=0: a free one)",
        )
        self.oracle_port = free_port(self.host)
        self.metrics_port = self.spec.metrics_port or free_port(self.host)
        self.status_port = self.spec.status_port or free_port(self.host)

    def _argv(self, role: str) -> list[str]:
        argv = [sys.executable, "-m", "tuner_service", *(["-v"] if self.verbose else []), role]
        if self.config:
            argv += ["--config", self.config]
        for item in self.overrides:
            argv += ["--set", item]
        return argv

    def _spawn(self, name: str, role: str, env: dict[str, str]) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:  # the child has its own descriptor
            popen = subprocess.Popen(
                self._argv(role),
                env={**os.environ, **env, process.PARENT_PID: str(os.getpid())},
                stdout=log,
                stderr=subprocess.STDOUT,
                # Ctrl-C in the terminal reaches only us, and we stop the children in order
                # (workers, then the chief); they still die with us (process.die_with_parent).
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        if not self.oracle_port:
            self.plan_ports()
        chief_env = Role("chief", self.host, self.oracle_port).env()
        chief_env[process.METRICS_PORT] = str(self.metrics_port)
        chief_env[process.STATUS_PORT] = str(self.status_port)
        self._spawn("chief", "chief", chief_env)
        for i in range(self.workers):
            env = Role(f"worker-{i}", self.host, self.oracle_port).env()
            env[process.METRICS_PORT] = str(free_port(self.host)) if self.spec.metrics_port else "0"
            self._spawn(f"worker-{i}", "worker", env)

    @property
    def chief(self) -> Proc:
        return self.procs[0]

    @property
    def worker_procs(self) -> list[Proc]:
        return self.procs[1:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Workers first (so they stop asking), then the chief, which saves its state."""
        for group, timeout in (
            (self.worker_procs, WORKER_STOP_TIMEOUT),
            (self.procs[:1], CHIEF_STOP_TIMEOUT),
        ):
            for proc in group:
                if proc.returncode is None:
                    proc.popen.send_signal(sig)
                    self.stopped.add(proc.name)
            _reap(group, timeout)

    def _track(self, snap: dict[str, Any] | None) -> None:
        """Remember which trial each live worker trains, to say where it went if the worker dies."""
        workers = (snap or {}).get("workers", {})
        for proc in self.worker_procs:
            if proc.returncode is None and proc.name in workers:
                proc.trial_id = workers[proc.name].get("trial_id")

    def _nobody_left(self, snap: dict[str, Any] | None) -> float | None:
        """Seconds to give the chief when no worker is alive and the search has not ended; else None."""
        if any(p.returncode is None for p in self.worker_procs):
            return None
        if snap is not None and snap.get("state") != "running":
            return None  # finished or failed: the chief is finalizing (retrain, results)
        released = any(p.returncode == 0 for p in self.worker_procs)  # told the search is over
        return CHIEF_WIND_DOWN if released else NO_WORKER_GRACE

    def wait(
        self,
        on_tick: Callable[[dict[str, Any] | None, list[Proc]], None] | None = None,
        tick: float = 0.5,
    ) -> int:
        """Wait for the chief (or stop it when no worker is left); its exit code, or 1."""
        nobody_since: float | None = None
        while self.chief.returncode is None:
            snap = read_snapshot(self.spec.project_dir)
            self._track(snap)
            if on_tick:
                on_tick(snap, self.procs)
            grace = self._nobody_left(snap)
            nobody_since = None if grace is None else (nobody_since or time.monotonic())
            if grace is not None and nobody_since is not None and time.monotonic() - nobody_since > grace:
                self.abandoned = True
                self.stopped.add(self.chief.name)
                self.chief.popen.send_signal(signal.SIGTERM)  # it saves its state and exits
                _reap(self.procs[:1], CHIEF_STOP_TIMEOUT)
                break
            time.sleep(tick)
        if self.chief.returncode != 0:
            # The search cannot go on without its chief: do not let workers wait for it.
            for proc in self.worker_procs:
                if proc.returncode is None:
                    proc.popen.terminate()
                    self.stopped.add(proc.name)
            _reap(self.worker_procs, WORKER_STOP_TIMEOUT)
        else:
            # The chief exits after the last trial; healthy workers were told STOPPED already.
            _reap(self.worker_procs, WORKER_EXIT_TIMEOUT, terminate_first=True)
        if on_tick:
            on_tick(read_snapshot(self.spec.project_dir), self.procs)
        if self.abandoned:
            return process.EXIT_FAILED
        code = self.chief.returncode or 0
        return code if code >= 0 else process.EXIT_FAILED

    def explain(self, snap: dict[str, Any] | None) -> list[str]:
        """One line per process that did not end well: how, its last error, where its trial went."""
        trials = (snap or {}).get("trials", {})
        lines = []
        for proc in self.procs:
            code = proc.returncode
            if code == 0 or proc.name in self.stopped:
                continue
            line = f"{proc.name} {proc.how_it_ended()}"
            error = proc.last_error() if code is not None and code > 0 else ""
            if error:
                line += f": {error}"
            if proc.trial_id is not None and proc.trial_id in trials:
                line += f"; {_where_it_went(proc, trials[proc.trial_id])}"
            lines.append(line)
        return lines


def _where_it_went(proc: Proc, record: dict[str, Any]) -> str:
    trial = f"its trial {record['trial_id']}"
    holder, status = record.get("tuner_id"), record.get("status")
    if holder == proc.name:
        return f"{trial} ended {status}" if status in ("COMPLETED", "FAILED") else f"{trial} did not finish"
    resumed = record.get("resumed_from")
    how = f", resumed from epoch {resumed}" if resumed else ", from its first epoch"
    return f"{trial} went to {holder}{how} ({status})"


def _reap(procs: list[Proc], timeout: float, *, terminate_first: bool = False) -> None:
    """Wait up to ``timeout`` seconds in all for ``procs`` to exit; stop the rest (say so)."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            how = "stopped" if terminate_first else "killed"
            print(f"{proc.name} did not exit within {timeout:.0f}s: {how}", file=sys.stderr)
            if terminate_first:
                proc.popen.terminate()
                try:
                    proc.popen.wait(WORKER_STOP_TIMEOUT)
                    continue
                except subprocess.TimeoutExpired:
                    pass
            proc.popen.kill()
            proc.popen.wait()


@contextmanager
def _signals_stop_us(*, ignore: bool = False) -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Stopped` in the main thread (SIGINT: KeyboardInterrupt);
    with ``ignore``, all three are ignored (while the children are being stopped in order)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    sigs = (signal.SIGTERM, signal.SIGHUP, *((signal.SIGINT,) if ignore else ()))
    previous = {sig: signal.signal(sig, signal.SIG_IGN if ignore else handler) for sig in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- a study that was run before -----------------------------------------------------------
def finished_search(spec: StudySpec) -> dict[str, Any] | None:
    """The saved ledger of a search that finished in ``spec``'s directory (with results), or None."""
    snap = read_snapshot(spec.project_dir)
    if snap is None or snap.get("state") != "finished" or not (spec.project_dir / files.RESULTS).exists():
        return None
    return snap


def extends(spec: StudySpec, snap: dict[str, Any]) -> bool:
    """Whether ``spec`` asks for more trials than the finished search had (keras-tuner's oracle
    does not save ``max_trials``: reloaded with a larger one, it goes on)."""
    return spec.tuner.type != "hyperband" and spec.max_trials > int(snap.get("max_trials") or 0)


def finished_line(spec: StudySpec, snap: dict[str, Any]) -> str:
    counts = snap.get("counts", {})
    best = snap.get("best_score")
    best_text = "-" if best is None else f"{best:.4f} (trial {snap.get('best_trial_id')})"
    more = "" if spec.tuner.type == "hyperband" else f", or --set max_trials=N (N > {snap.get('max_trials')})"
    return (
        f"study {spec.name!r} is finished: {counts.get('COMPLETED', 0)} trials completed, "
        f"best {spec.objective} {best_text}; nothing to run. To start over: --fresh{more}."
    )


def chief_pid_alive(spec: StudySpec) -> int | None:
    """The pid of a chief that serves this study now, from its endpoints.json, if it is alive."""
    pid = endpoints.read(spec.project_dir).get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"tuner_service" in cmdline or b"tuner-service" in cmdline else None


def start_over(spec: StudySpec) -> None:
    """``--fresh``: remove the study directory (refused while a chief serves it)."""
    root = files.StudyDir(spec.project_dir)
    if not root.root.exists():
        return
    pid = chief_pid_alive(spec)
    if pid is not None:
        raise UsageError(f"--fresh: a chief (pid {pid}) is running on {root.root}; stop it first")
    if not root.looks_like_study():
        raise UsageError(f"--fresh: {root.root} does not hold a study's files; not removing it")
    shutil.rmtree(root.root)
    print(f"study {spec.name!r}: removed {root.root} (--fresh)")


def watch_command(config: str | None, overrides: list[str]) -> str:
    """The ``status --watch`` command for this very study (same file, same overrides)."""
    argv = ["tuner-service", "status", *(["--config", config] if config else [])]
    for item in overrides:
        argv += ["--set", item]
    return shlex.join([*argv, "--watch"])


def run_search(
    spec: StudySpec,
    config: str | None,
    overrides: list[str],
    *,
    workers: int,
    show_progress: bool = True,
    fresh: bool = False,
    verbose: bool = False,
) -> int:
    """A local chief + ``workers`` search with a live table (``run`` and ``experiment``); its exit code."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    finished = None if fresh else finished_search(spec)
    if finished is not None and not extends(spec, finished):
        print(finished_line(spec, finished))
        return process.EXIT_OK
    from tuner_service import data

    data.check(spec.data, spec.seed)  # bad data: one line here, exit 2, before any process starts
    run = LocalRun(spec, config, overrides, workers=workers, verbose=verbose)
    run.plan_ports()  # before TensorFlow loads and before anything is written or removed
    if fresh:
        start_over(spec)
    elif finished is not None:
        print(f"study {spec.name!r}: extending the finished search to {spec.max_trials} trials")
    if not spec.is_seed_model:
        # Fail fast, in this process, on a user model that cannot be imported or called.
        from tuner_service.models import load_hypermodel

        load_hypermodel(spec.model)
    from tuner_service.progress import Progress

    try:
        run.log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # `directory` is a file, read-only, full...
        raise UsageError(
            f"directory {spec.directory!r}: cannot create {run.log_dir} ({err.strerror})"
        ) from None
    print(f"study {spec.name!r}: chief + {workers} workers, logs in {run.log_dir}")
    progress = Progress(spec, enabled=show_progress)
    try:
        with _signals_stop_us():
            run.start()
            print(f"metrics: http://{run.host}:{run.metrics_port}/metrics")
            print(f"status:  {run.host}:{run.status_port}; watch it: {watch_command(config, overrides)}")
            with progress:
                code = run.wait(progress.update)
    except (KeyboardInterrupt, Stopped) as err:
        signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
        print(
            f"interrupted ({signal.Signals(signum).name}): stopping workers, then the chief...",
            file=sys.stderr,
        )
        with _signals_stop_us(ignore=True):  # a second signal does not cut the ordered stop short
            run.stop()
        return 128 + signum
    return _verdict(run, code)


def _verdict(run: LocalRun, code: int) -> int:
    snap = read_snapshot(run.spec.project_dir)
    lines = run.explain(snap)
    if run.abandoned:
        remaining = ""
        if snap:
            done = snap.get("counts", {}).get("COMPLETED", 0)
            remaining = f" ({done}/{snap.get('max_trials')} trials completed)"
        print(
            f"search stopped: no worker is left to train the remaining trials{remaining}; "
            f"the chief saved its state; logs in {run.log_dir}",
            file=sys.stderr,
        )
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        usage = all(p.returncode == process.EXIT_USAGE for p in run.worker_procs)
        return process.EXIT_USAGE if usage else process.EXIT_FAILED
    if code == 0:
        for line in lines:  # the search finished without them
            print(f"note: {line}", file=sys.stderr)
        return code
    what = (
        "the chief refused the study (exit 2)"
        if code == process.EXIT_USAGE
        else f"search failed (exit {code})"
    )
    print(f"{what}; logs in {run.log_dir}", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    return code
