"""A chief and workers as real processes on loopback, wired only by keras-tuner's env contract,
that a test can kill, stop, restart and inspect through the shared directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO, free_port, tiny_study, wait_for

MODEL = "tests.fixtures.fault_models:SlowMLP"
#: A worker's first report (the heartbeat that renews its lease) comes only after the model is
#: built, the first epoch traced and run, and one paced second: 2-3 s idle, measured up to ~3x
#: that on a 2-core machine loaded by other processes. A lease that ran out then would move a
#: healthy worker's trial (and fence the worker), failing tests about something else. 15 s is 5x
#: the idle first epoch; the price is ~7 s more in each test that waits for a lease to run out.
LEASE_TIMEOUT = 15


def write_study(root: Path, **overrides: Any) -> Path:
    """A short search of slow epochs (tests/fixtures/fault_models.py) with a tight lease."""
    defaults: dict[str, Any] = {
        "name": "faults",
        "model": MODEL,
        "max_trials": 3,
        "epochs": 4,
        "seed": 3,
        "data": {"max_train_samples": 200},
        "lease_timeout": LEASE_TIMEOUT,
        "chief_deadline": 60,
    }
    return tiny_study(root, **{**defaults, **overrides})


class Search:
    def __init__(self, root: Path, study: Path, env: dict[str, str] | None = None):
        self.root = root
        self.study = study
        spec = yaml.safe_load(study.read_text())
        self.project = Path(spec["directory"]) / spec["name"]
        self.port = free_port()
        self.env = {**os.environ, "FAULT_EPOCH_SECONDS": "1.0", **(env or {})}
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = root / "logs"
        self.logs.mkdir(exist_ok=True)

    # -- processes ---------------------------------------------------------------------------
    def start(
        self, name: str, role: str, tuner_id: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        env = {
            **self.env,
            **(env or {}),
            "KERASTUNER_TUNER_ID": tuner_id,
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(self.port),
        }
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuner_service", role, "--config", str(self.study)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def chief(self, name: str = "chief") -> subprocess.Popen:
        return self.start(name, "chief", "chief")

    def worker(
        self, index: int, name: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """A worker with tuner id ``worker-<index>`` (``env`` adds to the search's, e.g. its pace)."""
        return self.start(name or f"worker-{index}", "worker", f"worker-{index}", env)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()

    def wait_exit(self, name: str, timeout: float) -> int:
        return self.procs[name].wait(timeout=timeout)

    # -- the shared directory ------------------------------------------------------------------
    def ledger(self) -> dict[str, Any]:
        try:
            return json.loads((self.project / "service_state.json").read_text())
        except (OSError, ValueError):
            return {}

    def trials(self) -> dict[str, dict[str, Any]]:
        out = {}
        for path in self.project.glob("trial_*/trial.json"):
            try:
                trial = json.loads(path.read_text())
            except ValueError:
                continue
            out[trial["trial_id"]] = trial
        return out

    def backup_epochs(self, trial_id: str) -> int:
        meta = self.project / f"trial_{trial_id}" / "backup" / "execution_0" / "training_metadata.json"
        try:
            return int(json.loads(meta.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            return 0

    def running_trial_of(self, tuner_id: str) -> str | None:
        for trial_id, record in self.ledger().get("trials", {}).items():
            if record["tuner_id"] == tuner_id and record["status"] == "RUNNING":
                return trial_id
        return None

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def chief_log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("chief*.log")))

    def wait_until(self, what: str, predicate: Callable[[], Any], timeout: float = 120) -> Any:
        """``wait_for`` the predicate; a chief that dies meanwhile ends the wait with its log
        (unless the wait is for the chief itself)."""

        def chief_alive() -> None:
            dead = {n: p.poll() for n, p in self.procs.items() if n.startswith("chief")}
            dead = {n: code for n, code in dead.items() if code not in (None, 0)}
            if dead and "chief" not in what:
                raise AssertionError(f"{dead} exited while waiting for {what}:\n{self.chief_log()[-3000:]}")

        return wait_for(predicate, what, timeout, interval=0.1, check=chief_alive)

    # -- what every fault test asserts -----------------------------------------------------------
    def assert_search_complete(self, max_trials: int, before: dict[str, float] | None = None) -> None:
        """The search finished with exactly max_trials completed trials, none twice, none lost."""
        trials = self.trials()
        completed = {tid: t["score"] for tid, t in trials.items() if t["status"] == "COMPLETED"}
        assert len(completed) == max_trials, trials
        ended = Counter(re.findall(r"trial (\S+) ended COMPLETED", self.chief_log()))
        twice = [tid for tid, n in ended.items() if n > 1]
        assert not twice, f"completed more than once: {twice}"
        assert set(ended) == set(completed), (ended, completed)
        for tid, score in (before or {}).items():
            assert completed.get(tid) == score, f"completed trial {tid} lost or changed"
        results = json.loads((self.project / "results.json").read_text())
        assert results["trials_completed"] == max_trials
        assert not list(self.project.glob("trial_*/backup")), "backups of ended trials were left"
