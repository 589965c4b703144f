"""One process of a *stock* keras-tuner distributed search (the benchmark's reference path).

Nothing of tuner-service is used: ``keras_tuner.RandomSearch`` (or ``Hyperband``) over the
sleeping hypermodel, with keras-tuner's own environment contract deciding the role. With
``KERASTUNER_TUNER_ID=chief`` ``search()`` runs keras-tuner's ``oracle_chief.start_server``;
any other id makes it a stock worker using keras-tuner's ``OracleClient``.

    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=8000 \
        python -m bench.stock_node --directory /tmp/stock --trials 20
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True)
    parser.add_argument("--project", default="e2e")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import keras_tuner
    import numpy as np

    from bench.sleepy import SleepyHyperModel

    tuner = keras_tuner.RandomSearch(
        SleepyHyperModel(),
        objective="val_accuracy",
        max_trials=args.trials,
        seed=args.seed,
        directory=args.directory,
        project_name=args.project,
    )
    x = np.zeros((8, 1), "float32")
    tuner.search(x, x, validation_data=(x, x), epochs=1, verbose=0)


if __name__ == "__main__":
    main()
