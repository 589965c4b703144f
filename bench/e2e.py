"""End-to-end: stock keras-tuner and tuner-service on fixed-duration trials, side by side.

Both paths run the same sleeping hypermodel (:mod:`bench.sleepy`) with RandomSearch, a chief
and N worker processes on loopback, wired only by keras-tuner's environment contract:

* ``stock``: ``python -m bench.stock_node`` — keras-tuner's own ``Tuner.search``; the chief runs
  ``oracle_chief.start_server``, the workers keras-tuner's ``OracleClient``.
* ``ours``: ``python -m tuner_service chief`` / ``python -m tuner_service worker``.

Per run it reports the wall time (launch to the last process exit), the start-up (launch to the
first trial's start), the parallel efficiency ``trials * seconds / (workers * wall)``, and the
chief's exit latency (chief exit minus the end of the last trial; trial ends are logged by the
hypermodel itself, identically for both paths).

    python -m bench.e2e --workers 1 2 4 --trials 20 --seconds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from tuner_service.local import free_port

REPO = Path(__file__).resolve().parents[1]
# Our worker loads the study's dataset even though the sleeping model ignores it; offline, the
# shared Fashion-MNIST sample is the Keras cache (an explicit KERAS_HOME wins).
SAMPLE_KERAS_HOME = REPO.parent / "shared" / "data" / "keras"
IMPLS = ("stock", "ours")


@dataclass
class E2EResult:
    impl: str
    workers: int
    trials: int
    seconds: float
    wall: float  # launch -> last process exited
    startup: float  # launch -> first trial started
    chief_exit: float  # launch -> chief exited
    last_trial_end: float  # launch -> last trial ended
    trials_run: int
    ok: bool
    error: str = ""

    @property
    def ideal(self) -> float:
        """Pure trial time if the work divided perfectly: trials * seconds / workers."""
        return self.trials * self.seconds / self.workers

    @property
    def efficiency(self) -> float:
        return self.ideal / self.wall if self.wall > 0 else 0.0

    @property
    def efficiency_after_startup(self) -> float:
        """Efficiency once every process is up: ideal / (wall - start-up)."""
        busy = self.wall - self.startup
        return self.ideal / busy if busy > 0 else 0.0

    @property
    def exit_latency(self) -> float:
        return self.chief_exit - self.last_trial_end

    @property
    def within_goal(self) -> bool:
        """The issue's goal: wall <= ideal + process start-up + 1 s."""
        return self.wall <= self.ideal + self.startup + 1.0

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "ideal": self.ideal,
            "efficiency": self.efficiency,
            "efficiency_after_startup": self.efficiency_after_startup,
            "exit_latency": self.exit_latency,
            "within_goal": self.within_goal,
        }


def _study(directory: Path, trials: int, seed: int) -> Path:
    study = {
        "name": "e2e",
        "model": "bench.sleepy:SleepyHyperModel",
        "tuner": {"type": "random"},
        "max_trials": trials,
        "epochs": 1,
        "seed": seed,
        "directory": str(directory),
        "data": {"max_train_samples": 100},
        "metrics_port": 0,
        "status_port": 0,
        "baseline": False,
        "retrain_best": False,
    }
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _commands(impl: str, directory: Path, trials: int, seed: int) -> tuple[list[str], list[str]]:
    """(chief argv, worker argv) for one implementation."""
    py = sys.executable
    if impl == "stock":
        node = [py, "-m", "bench.stock_node", "--directory", str(directory), "--trials", str(trials)]
        return node + ["--seed", str(seed)], node + ["--seed", str(seed)]
    study = str(_study(directory, trials, seed))
    return [py, "-m", "tuner_service", "chief", "-c", study], [
        py,
        "-m",
        "tuner_service",
        "worker",
        "-c",
        study,
    ]


def run_once(
    impl: str, workers: int, trials: int, seconds: float, seed: int = 1, timeout: float = 300
) -> E2EResult:
    with tempfile.TemporaryDirectory(prefix=f"bench-e2e-{impl}-") as tmp:
        directory = Path(tmp)
        trial_log = directory / "trials.log"
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_HOME": os.environ.get("KERAS_HOME") or str(SAMPLE_KERAS_HOME),
            "KERAS_BACKEND": "tensorflow",
            "SLEEPY_SECONDS": str(seconds),
            "SLEEPY_LOG": str(trial_log),
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port),
        }
        chief_cmd, worker_cmd = _commands(impl, directory, trials, seed)
        exits: dict[str, float] = {}
        codes: dict[str, int] = {}
        procs: list[tuple[str, subprocess.Popen]] = []

        def spawn(name: str, argv: list[str]) -> None:
            out = open(directory / f"{name}.log", "wb")  # noqa: SIM115 - closed by the watcher
            p = subprocess.Popen(
                argv, cwd=REPO, env={**env, "KERASTUNER_TUNER_ID": name}, stdout=out, stderr=subprocess.STDOUT
            )
            procs.append((name, p))

            def watch() -> None:
                codes[name] = p.wait()
                exits[name] = time.monotonic()
                out.close()

            threading.Thread(target=watch, daemon=True).start()

        launch = time.monotonic()
        wall_launch = time.time()
        spawn("chief", chief_cmd)
        for i in range(workers):
            spawn(f"worker-{i}", worker_cmd)
        deadline = launch + timeout
        error = ""
        while len(exits) < len(procs):
            failed = any(code != 0 for code in codes.values())
            if time.monotonic() > deadline or failed:
                error = "a process failed" if failed else f"timed out after {timeout:.0f}s"
                for _, p in procs:
                    p.kill()
                for _, p in procs:
                    p.wait()
                time.sleep(0.1)
                break
            time.sleep(0.02)
        spans = (
            [tuple(map(float, line.split())) for line in trial_log.read_text().splitlines()]
            if trial_log.exists()
            else []
        )
        bad = {n: c for n, c in codes.items() if c != 0}
        if bad:
            tail = (directory / f"{next(iter(bad))}.log").read_text()[-800:]
            error = f"{error}; exit codes {bad}: {tail}"
        return E2EResult(
            impl=impl,
            workers=workers,
            trials=trials,
            seconds=seconds,
            wall=max(exits.values(), default=deadline) - launch,
            startup=min((s for s, _ in spans), default=wall_launch) - wall_launch,
            chief_exit=exits.get("chief", deadline) - launch,
            last_trial_end=max((e for _, e in spans), default=wall_launch) - wall_launch,
            trials_run=len(spans),
            ok=not error and len(spans) == trials,
            error=error,
        )


def run(workers: list[int], trials: int, seconds: float, impls: tuple[str, ...] = IMPLS) -> list[E2EResult]:
    """Every (workers, impl) pair, stock and ours alternating so both see the same machine load."""
    results = []
    for n in workers:
        for impl in impls:
            result = run_once(impl, n, trials, seconds)
            print(format_row(result), file=sys.stderr, flush=True)
            results.append(result)
    return results


def format_row(r: E2EResult) -> str:
    status = "ok" if r.ok else f"FAILED ({r.error[:200]})"
    return (
        f"e2e {r.impl:5s} workers={r.workers} wall={r.wall:6.2f}s ideal={r.ideal:5.1f}s "
        f"startup={r.startup:5.2f}s eff={r.efficiency:4.2f} chief_exit={r.chief_exit:6.2f}s "
        f"exit_latency={r.exit_latency:6.2f}s trials={r.trials_run} {status}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--impl", choices=IMPLS, action="append", help="default: both")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    results = run(args.workers, args.trials, args.seconds, tuple(args.impl or IMPLS))
    if args.json:
        Path(args.json).write_text(json.dumps([r.as_dict() for r in results], indent=1))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
