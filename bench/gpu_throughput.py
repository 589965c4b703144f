"""Trials per hour per worker for the seed's MLP and CNN, with and without mixed precision and XLA.

One prepared script for a GPU machine (it runs on CPU too). It does what a worker does per trial,
in-process and without a chief (the protocol costs milliseconds; bench.e2e measures it): the
device set-up of ``tuner_service.compute`` once, the data once, then per configuration a model
from the seed's hypermodel at fixed mid-space hyperparameters, ``fit`` for ``--epochs``
(the first epoch includes tracing and XLA compilation), and a validation pass. A trial of the
study (``--trial-epochs``, default 10) is extrapolated as: first epoch + (E-1) x steady epoch
+ validation; trials/hour = 3600 / that.

    KERAS_HOME=/work/shared/data/keras python bench/gpu_throughput.py --models mlp cnn
    KERAS_BACKEND=jax python bench/gpu_throughput.py --data synthetic   # a GPU box without TF

Data: ``fashion_mnist`` (the Keras loader; the offline sample is tiled up to ``--train-size``)
or ``synthetic`` (random images of the same shape: throughput does not depend on pixels).
Writes a Markdown table to stdout and JSON to ``--json`` (or ``$OUT/gpu_throughput.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: grow, like TF memory growth
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402

from tuner_service import compute  # noqa: E402
from tuner_service.models.seed import SeedCNN, SeedMLP  # noqa: E402
from tuner_service.spec import ComputeSpec  # noqa: E402

# Mid-space hyperparameters: a typical trial, neither the smallest nor the largest model.
TRIAL_HPS = {
    "mlp": (
        SeedMLP,
        {
            "dropout": 0.1,
            "n_layers": 2,
            "units_0": 200,
            "units_1": 200,
            "optimizer": "adam",
            "learning_rate": 0.001,
        },
    ),
    "cnn": (
        SeedCNN,
        {
            "n_blocks": 2,
            "filters_0": 32,
            "padding_0": "same",
            "filters_1": 64,
            "padding_1": "same",
            "dense_units": 100,
            "optimizer": "adam",
            "learning_rate": 0.001,
        },
    ),
}
CONFIGS = {  # name: (mixed_precision, jit_compile)
    "fp32": (False, False),
    "fp32+xla": (False, True),
    "mixed": (True, False),
    "mixed+xla": (True, True),
}


def load_data(kind: str, train_size: int, val_size: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    if kind == "synthetic":
        x = rng.integers(0, 256, (train_size + val_size, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, train_size + val_size)
    else:
        (x, y), _ = keras.datasets.fashion_mnist.load_data()
        reps = -(-(train_size + val_size) // len(x))  # the offline sample is small: tile it
        x, y = np.tile(x, (reps, 1, 1)), np.tile(y, reps)
    x = (x[: train_size + val_size].astype("float32") / 255.0)[..., None]
    y = keras.utils.to_categorical(y[: train_size + val_size], 10).astype("float32")
    return x[:train_size], y[:train_size], x[train_size:], y[train_size:]


def build(model: str, jit: bool) -> keras.Model:
    cls, values = TRIAL_HPS[model]
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    net = cls().build(hp)
    net.jit_compile = jit
    return net


def measure(model: str, config: str, data: tuple, args: argparse.Namespace) -> dict:
    mixed, jit = CONFIGS[config]
    policy = compute.configure_devices(ComputeSpec(mixed_precision=mixed, jit_compile=jit))["policy"]
    keras.backend.clear_session()
    gc.collect()
    x_tr, y_tr, x_val, y_val = data
    if args.pipeline == "tf.data":
        train, val = compute.datasets(x_tr, y_tr, x_val, y_val, args.batch_size, 0)
        fit_args, fit_kw, eval_args = (train,), {"shuffle": False}, (val,)
    else:
        fit_args, fit_kw, eval_args = (x_tr, y_tr), {"batch_size": args.batch_size}, (x_val, y_val)
    start = time.perf_counter()
    net = build(model, jit)
    built = time.perf_counter()
    epoch_times = []
    for _ in range(args.epochs):
        t = time.perf_counter()
        net.fit(*fit_args, epochs=1, verbose=0, **fit_kw)
        epoch_times.append(time.perf_counter() - t)
    t = time.perf_counter()
    net.evaluate(
        *eval_args, verbose=0, **({"batch_size": args.batch_size} if args.pipeline == "numpy" else {})
    )
    evaluate = time.perf_counter() - t
    steady = float(np.median(epoch_times[1:])) if len(epoch_times) > 1 else epoch_times[0]
    trial = (built - start) + epoch_times[0] + (args.trial_epochs - 1) * steady + evaluate
    return {
        "model": model,
        "config": config,
        "policy": policy,
        "jit_compile": jit,
        "pipeline": args.pipeline,
        "build_s": built - start,
        "first_epoch_s": epoch_times[0],
        "steady_epoch_s": steady,
        "samples_per_s": len(x_tr) / steady,
        "evaluate_s": evaluate,
        "trial_s": trial,
        "trials_per_hour": 3600 / trial,
    }


def device_facts() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        kinds = ", ".join(str(d.device_kind) for d in jax.devices())
        return f"Keras {keras.__version__} on JAX {jax.__version__}: {kinds}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return f"Keras {keras.__version__} on TensorFlow {tf.__version__}: {', '.join(names) or 'CPU only'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=sorted(TRIAL_HPS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--data", choices=("fashion_mnist", "synthetic"), default="fashion_mnist")
    parser.add_argument(
        "--train-size", type=int, default=48_000, help="full Fashion-MNIST minus 20%% validation"
    )
    parser.add_argument("--val-size", type=int, default=12_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per configuration")
    parser.add_argument("--trial-epochs", type=int, default=10, help="epochs of the trial extrapolated")
    parser.add_argument(
        "--pipeline",
        choices=("tf.data", "numpy"),
        default=None,
        help="default: tf.data on TensorFlow, numpy otherwise",
    )
    parser.add_argument("--json", help="write the results here (default $OUT/gpu_throughput.json if $OUT)")
    args = parser.parse_args()
    if args.pipeline is None:
        args.pipeline = "tf.data" if keras.backend.backend() == "tensorflow" else "numpy"
    if args.pipeline == "tf.data" and keras.backend.backend() != "tensorflow":
        parser.error("--pipeline tf.data needs the TensorFlow backend")
    if keras.backend.backend() == "jax":
        # Under JAX, Keras always compiles with XLA; jit_compile=False would mean op-by-op eager.
        args.configs = [c for c in args.configs if c.endswith("+xla")]

    compute.configure_devices(ComputeSpec())  # memory growth before any op
    data = load_data(args.data, args.train_size, args.val_size, 0)
    facts = f"{device_facts()}; {os.cpu_count()} CPU cores; Python {platform.python_version()}"
    print(f"# Trials per hour per worker\n\n{facts}")
    print(
        f"data {args.data} {args.train_size} train / {args.val_size} val, batch {args.batch_size}, "
        f"pipeline {args.pipeline}, trial = {args.trial_epochs} epochs (measured {args.epochs})\n"
    )
    print("| model | config | policy | build s | 1st epoch s | epoch s | samples/s | trial s | trials/hour |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for model in args.models:
        for config in args.configs:
            try:
                r = measure(model, config, data, args)
            except Exception as err:  # noqa: BLE001 - report the configuration and go on
                print(
                    f"| {model} | {config} | failed: {type(err).__name__}: {str(err)[:120]} |||||||",
                    flush=True,
                )
                continue
            rows.append(r)
            print(
                f"| {model} | {config} | {r['policy']} | {r['build_s']:.2f} | {r['first_epoch_s']:.2f} | "
                f"{r['steady_epoch_s']:.2f} | {r['samples_per_s']:,.0f} | {r['trial_s']:.1f} | "
                f"{r['trials_per_hour']:,.0f} |",
                flush=True,
            )
    out = args.json or (
        os.path.join(os.environ["OUT"], "gpu_throughput.json") if os.environ.get("OUT") else None
    )
    if out:
        Path(out).write_text(json.dumps({"facts": facts, "args": vars(args), "rows": rows}, indent=1))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
