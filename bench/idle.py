"""IDLE back-off: how many times a worker asks while the oracle says "wait".

Hyperband answers IDLE while a bracket waits for its last trials. A stock keras-tuner worker
(``keras_tuner``'s ``OracleClient`` inside ``Tuner.search``) asks again at once; ours backs off
exponentially. Both ask our chief (in-process, real gRPC on loopback), whose oracle answers IDLE
for ``--seconds`` and then hands out a trial; the chief counts the CreateTrial calls.

    python -m bench.idle --seconds 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import keras_tuner


class IdleFirstOracle(keras_tuner.oracles.RandomSearchOracle):
    """Answers IDLE for ``idle_for`` seconds after the first request, then as RandomSearch."""

    idle_for = 2.0

    def populate_space(self, trial_id):
        if not hasattr(self, "_started"):
            self._started = time.monotonic()
        if time.monotonic() - self._started < self.idle_for:
            return {"status": "IDLE"}
        return super().populate_space(trial_id)


@dataclass
class IdleResult:
    impl: str
    seconds: float
    create_calls: int
    waited: float


def _chief(directory: Path, seconds: float):
    from tuner_service.chief.chief import Chief
    from tuner_service.spec import validate
    from tuner_service.tuners import build_tuner

    os.environ.update(
        KERASTUNER_TUNER_ID="chief", KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT="1"
    )
    spec = validate({"name": "idle", "model": "bench.sleepy:SleepyHyperModel", "directory": str(directory)})
    oracle = IdleFirstOracle(objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=1, seed=1)
    oracle.idle_for = seconds
    from bench.sleepy import SleepyHyperModel

    tuner = build_tuner(spec, SleepyHyperModel(), oracle)
    tuner.save()
    chief = Chief(spec, tuner.oracle, address="127.0.0.1:0", linger=1.0)
    calls: Counter = Counter()
    chief.servicer.rpc_observers.append(lambda method, code, s: calls.update([method]))
    chief.start()
    return chief, calls


def measure(impl: str, seconds: float) -> IdleResult:
    from keras_tuner.src.distribute import oracle_client  # stock keras-tuner's worker client

    from tuner_service.client import ServiceOracleClient

    with tempfile.TemporaryDirectory() as tmp:
        chief, calls = _chief(Path(tmp), seconds)
        try:
            os.environ["KERASTUNER_ORACLE_PORT"] = str(chief.port)
            os.environ["KERASTUNER_TUNER_ID"] = "worker-0"
            local = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=1)
            if impl == "stock":
                client = oracle_client.OracleClient(local)
            else:
                client = ServiceOracleClient(local, f"127.0.0.1:{chief.port}", "worker-0")
            start = time.monotonic()
            while True:  # exactly Tuner.search's loop for stock; ours waits inside create_trial
                trial = client.create_trial("worker-0")
                if trial.status != "IDLE":
                    break
            waited = time.monotonic() - start
        finally:
            chief.request_stop("bench")
            chief.shutdown(chief.wait())
    return IdleResult(impl, seconds, calls["CreateTrial"], waited)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    for impl in ("stock", "ours"):
        r = measure(impl, args.seconds)
        print(
            f"idle {r.impl:5s} told to wait {r.seconds:g} s: {r.create_calls} CreateTrial calls, "
            f"waited {r.waited:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
