"""What monitoring costs the chief: scrape time, per-event and per-RPC overhead, ledger saves.

    python -m bench.monitoring [--trials 100 1000] [--epochs 10]

Not a test: prints numbers for docs/monitoring.md ("Costs").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest

from tuner_service.metrics import ChiefMetrics
from tuner_service.status.events import EventHub
from tuner_service.study.history import TrialHistory
from tuner_service.study.ledger import Event, Ledger

BETTER = lambda a, b: a > b  # noqa: E731
METRICS = {"loss": 0.1, "accuracy": 0.9, "val_loss": 0.2, "val_accuracy": 0.8}


def per_call(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def search(trials: int, epochs: int, folder: Path) -> tuple[Ledger, ChiefMetrics]:
    ledger = Ledger("bench", trials)  # no path while filling: time the bookkeeping only
    metrics = ChiefMetrics(ledger).attach()
    TrialHistory(folder / "trial_history.jsonl").attach(ledger)
    for i in range(trials):
        ledger.trial_started(f"worker-{i % 16}", str(i))
        for epoch in range(epochs):
            ledger.trial_reported(str(i), epoch, METRICS)
        ledger.trial_ended(str(i), "COMPLETED", 0.8, BETTER)
    ledger.path = folder / "service_state.json"
    return ledger, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    for trials in args.trials:
        with tempfile.TemporaryDirectory() as tmp:
            ledger, metrics = search(trials, args.epochs, Path(tmp))
            scrape = per_call(lambda m=metrics: generate_latest(m.registry), 10)
            save = per_call(ledger.save, 5)
            size = os.path.getsize(ledger.path) / 1e6
            print(
                f"{trials} trials x {args.epochs} epochs: scrape {scrape * 1e3:.1f} ms, "
                f"ledger save {save * 1e3:.1f} ms ({size:.2f} MB)"
            )
    ledger = Ledger("bench", 10)
    metrics = ChiefMetrics(ledger)
    with tempfile.TemporaryDirectory() as tmp:
        history = TrialHistory(Path(tmp) / "trial_history.jsonl")
        hub = EventHub(ledger)
        event = Event("trial_reported", time.time(), "w", "1", {"step": 0, "metrics": METRICS})
        for name, fn in (
            ("metrics, per event", lambda: metrics.on_event(event)),
            ("history append, per event", lambda: history.on_event(event)),
            ("event hub, per event (no streams)", lambda: hub.publish(event)),
            ("metrics, per RPC", lambda: metrics.on_rpc("UpdateTrial", "OK", 0.001)),
        ):
            print(f"{name}: {per_call(fn, 20000) * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
