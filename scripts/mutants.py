"""Mutation audit: plant known one-line bugs, one at a time, and check that the tests catch each.

Run before a release (about 15-25 minutes on 2 cores; each mutant runs only the tests listed
for it)::

    python scripts/mutants.py              # every mutant; exit 1 if any survives
    python scripts/mutants.py --list       # names and what each breaks
    python scripts/mutants.py -k stopped   # the mutants whose name contains "stopped"

Each mutant is applied to a copy of the working tree (tracked and untracked files, in a
temporary folder), never to the tree itself, so an interrupted audit leaves nothing behind. A
mutant whose original line is no longer in the code is reported as STALE: update the list when
the code it guards changes. A mutant SURVIVES when its tests pass with the bug planted; that
means a regression of that kind would reach users unnoticed: add or sharpen a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # file, relative to the repository
    original: str  # must occur exactly once in the file
    mutated: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions
    why: str = ""
    env: dict[str, str] = field(default_factory=dict)


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "worker-ignores-stopped",
        "tuner_service/worker.py",
        "        if answer.status != TrialStatus.STOPPED:\n            return False",
        "        if True:\n            return False",
        ("tests/test_stopping.py::test_search_stops_unpromising_trials_early",),
        "a worker keeps training a trial the chief stopped early",
    ),
    Mutant(
        "loss-objective-maximised",
        "tuner_service/objective.py",
        "    return Objective(name, inferred)",
        '    return Objective(name, "max")',
        ("tests/test_local_search.py", "-k", "loss"),
        "an objective named *loss is maximised",
    ),
    Mutant(
        "servicer-better-inverted",
        "tuner_service/chief/servicer.py",
        '(lambda a, b: a > b) if oracle.objective.direction == "max" else (lambda a, b: a < b)',
        '(lambda a, b: a < b) if oracle.objective.direction == "max" else (lambda a, b: a > b)',
        ("tests/test_local_search.py", "-k", "loss"),
        "the chief's best trial (saved state, status, metrics) is the worst one",
    ),
    Mutant(
        "data-section-not-strict",
        "tuner_service/spec.py",
        "class DataSpec(_Strict):",
        "class DataSpec(BaseModel):",
        ("tests/test_spec.py",),
        "a typo in the data section is silently ignored",
    ),
    Mutant(
        "early-stopping-section-not-strict",
        "tuner_service/spec.py",
        "class EarlyStoppingSpec(_Strict):",
        "class EarlyStoppingSpec(BaseModel):",
        ("tests/test_spec.py",),
        "early_stopping: {min_epoch: 5} is silently ignored",
    ),
    Mutant(
        "bayesian-section-not-strict",
        "tuner_service/spec.py",
        "class BayesianTuner(_Strict):",
        "class BayesianTuner(BaseModel):",
        ("tests/test_spec.py",),
        "a typo among the Bayesian options is silently ignored",
    ),
    Mutant(
        "history-not-cut-back-on-resume",
        "tuner_service/checkpoints.py",
        "self._logs = {e: v for e, v in self._read_logs().items() if e < epochs}",
        "self._logs = {e: v for e, v in self._read_logs().items()}",
        ("tests/fault/test_checkpoints.py",),
        "history.json keeps epochs past the backup's after a resume",
    ),
    Mutant(
        "chief-not-woken-by-calls",
        "tuner_service/chief/servicer.py",
        "            self.notify()\n\n    return wrapper",
        "            pass\n\n    return wrapper",
        ("tests/test_chief_server.py",),
        "the chief notices the end of the search only by polling",
    ),
    Mutant(
        "chief-loop-never-reaps",
        "tuner_service/chief/chief.py",
        "                s.reap_leases()\n",
        "                pass\n",
        ("tests/test_chief_server.py", "-k", "reaps"),
        "a dead worker's trial waits forever when no other call comes in",
    ),
    Mutant(
        "chief-reaps-under-the-wake-condition",
        "tuner_service/chief/chief.py",
        "                s.changed.wait(timeout=poll if expiry is None else min(poll, expiry + 0.01))\n",
        "                s.changed.wait(timeout=poll if expiry is None else min(poll, expiry + 0.01))\n"
        "                s.reap_leases()\n",
        ("tests/test_chief_server.py", "-k", "never_waits"),
        "every finished call waits for the reaping loop, itself behind any decision (the 256-worker p99)",
    ),
    Mutant(
        "status-streams-not-ended-on-close",
        "tuner_service/status/server.py",
        "        self.hub.close()\n",
        "",
        ("tests/monitoring/test_status_api.py",),
        "closing the status server leaves open event streams hanging",
    ),
)


def copy_tree(dst: Path) -> None:
    """The working tree as git sees it (tracked + untracked, not ignored) into ``dst``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = raw.decode()
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def run_one(mutant: Mutant, timeout: float) -> tuple[str, float, str]:
    """(verdict, seconds, tail of the test output): KILLED, SURVIVED, STALE or ERROR."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        root = Path(tmp) / REPO.name
        copy_tree(root)
        shared = REPO.parent / "shared"  # the tests find the data sample beside the repository
        if shared.is_dir():
            (Path(tmp) / "shared").symlink_to(shared)
        target = root / mutant.path
        text = target.read_text()
        if text.count(mutant.original) != 1:
            return "STALE", 0.0, f"original found {text.count(mutant.original)} times in {mutant.path}"
        target.write_text(text.replace(mutant.original, mutant.mutated))
        env = {**os.environ, "PYTHONPATH": str(root), **mutant.env}
        start = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return "KILLED", time.monotonic() - start, "timed out (a hang counts as caught)"
        seconds = time.monotonic() - start
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
        if proc.returncode == 0:
            return "SURVIVED", seconds, tail[0]
        if proc.returncode == 1:
            return "KILLED", seconds, tail[0]
        return "ERROR", seconds, tail[0]  # collection error, no tests ran...: not a verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutants whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant's tests")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.k in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:40} {m.path}: {m.why}")
        return 0
    counts: dict[str, int] = {}
    for m in chosen:
        verdict, seconds, tail = run_one(m, args.timeout)
        counts[verdict] = counts.get(verdict, 0) + 1
        print(f"{verdict:8} {m.name:40} {seconds:6.0f}s  {tail}", flush=True)
    print(", ".join(f"{n} {v.lower()}" for v, n in sorted(counts.items())))
    return 0 if set(counts) <= {"KILLED"} else 1


if __name__ == "__main__":
    sys.exit(main())
