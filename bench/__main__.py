"""`make bench`: stock keras-tuner and tuner-service side by side, one table of ratios.

Runs, in one go and on the same machine state:
  * the oracle benchmark (``bench.oracle_bench``, when present): decision latency at 100
    completed trials and regret, stock BayesianOptimization vs ours;
  * the end-to-end benchmark (``bench.e2e``): wall time, parallel efficiency, chief exit latency
    for 1, 2 and 4 workers on fixed-duration trials;
  * the load test (``bench.load``): 256 simulated workers against a real chief;
  * the IDLE back-off (``bench.idle``): how often a worker asks while told to wait.

and prints one Markdown table (stock, ours, stock/ours). ``--smoke`` is the CI variant: tiny
sizes, no oracle benchmark (it has its own smoke), well under a minute on an idle machine.

    python -m bench                 # the full benchmark (about an hour on 2 cores)
    python -m bench --smoke         # CI: the harness works end to end
    python -m bench --skip oracle   # everything but the oracle benchmark
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from bench import e2e, idle, load

REPO = Path(__file__).resolve().parents[1]
PARTS = ("oracle", "e2e", "load", "idle")


@dataclass(frozen=True)
class Sizes:
    e2e_workers: tuple[int, ...]
    e2e_trials: int
    e2e_seconds: float
    load_clients: int
    load_cycles: int
    load_think: float
    load_processes: int
    idle_seconds: float


FULL = Sizes((1, 2, 4), 20, 2.0, 256, 3, 5.0, 4, 2.0)
SMOKE = Sizes((1,), 3, 0.2, 16, 1, 0.1, 1, 0.5)


@dataclass
class Row:
    figure: str
    stock: float | None
    ours: float | None
    unit: str = "s"
    lower_is_better: bool = True
    note: str = ""

    @staticmethod
    def _fmt(x: float | None, unit: str) -> str:
        if x is None or x != x:
            return "-"
        if unit == "ms":
            return f"{x:.1f} ms" if x < 100 else f"{x:,.0f} ms"
        if unit == "s":
            return f"{x:.2f} s"
        if unit == "":
            return f"{x:.2f}"
        if unit == "n":
            return f"{x:,.0f}"
        return f"{x:g} {unit}"

    def markdown(self) -> str:
        ratio = "-"
        if self.stock is not None and self.ours not in (None, 0) and self.stock == self.stock:
            ratio = f"{self.stock / self.ours:.2f}x"
        elif self.stock == 0 and self.ours == 0:
            ratio = "="
        return (
            f"| {self.figure} | {self._fmt(self.stock, self.unit)} | {self._fmt(self.ours, self.unit)} "
            f"| {ratio} | {self.note} |"
        )


def machine_facts() -> str:
    import tensorflow as tf

    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"load average {os.getloadavg()[0]:.1f} at start, Python {platform.python_version()}, "
        f"keras-tuner {version('keras-tuner')}, TensorFlow {tf.__version__} "
        f"({'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}), grpcio {version('grpcio')}"
    )


# -- parts ------------------------------------------------------------------------------------------
def oracle_rows(smoke: bool, raw_out: dict[str, Any]) -> list[Row]:
    """Decision latency and regret from ``bench.oracle_bench`` (its own process, raw JSON)."""
    if importlib.util.find_spec("bench.oracle_bench") is None:
        return [Row("decision latency / regret", None, None, note="bench/oracle_bench.py not on this branch")]
    if smoke:
        return [Row("decision latency / regret", None, None, note="skipped in --smoke (see its own smoke)")]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "oracle.json"
        # The load part runs below (bench.load); the oracle's own load run is in its benchmark.
        cmd = [
            sys.executable,
            "-m",
            "bench.oracle_bench",
            "--parts",
            "latency,regret",
            "--kinds",
            "stock,ours",
        ]
        cmd += ["--checkpoints", "100", "--budgets", "100", "--json", str(path)]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            return [
                Row(
                    "decision latency / regret", None, None, note=f"oracle bench failed: {done.stderr[-300:]}"
                )
            ]
        raw = json.loads(path.read_text())
    raw_out["oracle"] = raw
    rows: list[Row] = []
    for n in raw["args"]["stock_checkpoints"]:
        for call, name in (("create_s", "CreateTrial"), ("end_s", "EndTrial")):
            cells = {}
            for kind in ("stock", "ours"):
                xs = [s for run in raw["latency"].get(kind, []) for c, s in run[call] if c == n]
                cells[kind] = (
                    (float(np.percentile(xs, 50)) * 1000, float(np.percentile(xs, 99)) * 1000)
                    if xs
                    else (None, None)
                )
            rows.append(Row(f"{name} p50 at {n} completed", cells["stock"][0], cells["ours"][0], "ms"))
            rows.append(Row(f"{name} p99 at {n} completed", cells["stock"][1], cells["ours"][1], "ms"))
    budget = raw["args"]["stock_budget"]
    for problem, by_kind in raw.get("regret", {}).items():
        regrets = {k: [r["regret_at"][str(budget)] for r in runs] for k, runs in by_kind.items()}
        means = {k: float(np.mean(v)) * 100 for k, v in regrets.items() if v}
        sds = {k: float(np.std(v, ddof=1)) * 100 if len(v) > 1 else 0.0 for k, v in regrets.items()}
        rows.append(
            Row(
                f"regret {problem.upper()} at {budget} trials (points, mean)",
                means.get("stock"),
                means.get("ours"),
                "",
                note=f"sd stock {sds.get('stock', 0):.2f} (n={len(regrets.get('stock', []))}), "
                f"ours {sds.get('ours', 0):.2f} (n={len(regrets.get('ours', []))})",
            )
        )
    return rows


def e2e_rows(sizes: Sizes, raw_out: dict[str, Any]) -> list[Row]:
    results = e2e.run(list(sizes.e2e_workers), sizes.e2e_trials, sizes.e2e_seconds)
    raw_out["e2e"] = [r.as_dict() for r in results]
    by = {(r.impl, r.workers): r for r in results}
    rows: list[Row] = []
    label = f"{sizes.e2e_trials} trials x {sizes.e2e_seconds:g} s"
    for n in sizes.e2e_workers:
        stock, ours = by[("stock", n)], by[("ours", n)]
        ok = "" if stock.ok and ours.ok else f"FAILED: {stock.error or ours.error}"[:120]
        met = "met" if ours.within_goal else "MISSED"
        goal = f"ideal {ours.ideal:.0f} s + start-up {ours.startup:.1f} s + 1 s: {met}"
        rows.append(Row(f"e2e wall, {n} worker(s), {label}", stock.wall, ours.wall, note=ok or goal))
        rows.append(
            Row(
                f"e2e parallel efficiency, {n} worker(s)",
                stock.efficiency,
                ours.efficiency,
                "",
                lower_is_better=False,
                note="trials x seconds / (workers x wall), incl. start-up",
            )
        )
        rows.append(
            Row(
                f"e2e efficiency after start-up, {n} worker(s)",
                stock.efficiency_after_startup,
                ours.efficiency_after_startup,
                "",
                lower_is_better=False,
                note="ideal / (wall - launch-to-first-trial)",
            )
        )
        rows.append(
            Row(
                f"chief exit latency, {n} worker(s)",
                stock.exit_latency,
                ours.exit_latency,
                note="chief exit - last trial end",
            )
        )
    return rows


def load_rows(sizes: Sizes, raw_out: dict[str, Any]) -> list[Row]:
    results = {}
    for impl in ("stock", "ours"):
        r = load.run_load(impl, sizes.load_clients, sizes.load_cycles, sizes.load_think, sizes.load_processes)
        print(load.format_row(r), file=sys.stderr, flush=True)
        results[impl] = r
    raw_out["load"] = {k: {**vars(v), "rps": v.rps, "ok": v.ok} for k, v in results.items()}
    s, o = results["stock"], results["ours"]
    what = f"{sizes.load_clients} clients, {sizes.load_cycles} trials each, ~{sizes.load_think:g} s per trial"
    return [
        Row(f"RPC latency p50, {what}", s.p50_ms, o.p50_ms, "ms"),
        Row(f"RPC latency p99, {what}", s.p99_ms, o.p99_ms, "ms", note="goal: ours < 250 ms"),
        Row("RPC latency max", s.max_ms, o.max_ms, "ms"),
        Row("RPC errors", float(s.errors), float(o.errors), "n", note="goal: 0"),
        Row(
            "trials completed",
            float(s.trials_completed),
            float(o.trials_completed),
            "n",
            lower_is_better=False,
        ),
    ]


def idle_rows(sizes: Sizes, raw_out: dict[str, Any]) -> list[Row]:
    with contextlib.redirect_stdout(io.StringIO()):  # keras-tuner's trial tables
        results = {impl: idle.measure(impl, sizes.idle_seconds) for impl in ("stock", "ours")}
    raw_out["idle"] = {k: vars(v) for k, v in results.items()}
    return [
        Row(
            f"CreateTrial calls while told IDLE for {sizes.idle_seconds:g} s",
            float(results["stock"].create_calls),
            float(results["ours"].create_calls),
            "n",
            note="stock re-asks at once (busy loop); ours backs off 0.05 s doubling to 2 s",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI: tiny sizes, no oracle benchmark")
    parser.add_argument("--skip", action="append", default=[], choices=PARTS, help="leave a part out")
    parser.add_argument("--json", help="also write every raw figure here")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    started = time.perf_counter()
    facts = machine_facts()
    raw: dict[str, Any] = {"machine": facts, "sizes": vars(sizes), "smoke": args.smoke}
    rows: list[Row] = []
    if "oracle" not in args.skip:
        rows += oracle_rows(args.smoke, raw)
    if "e2e" not in args.skip:
        rows += e2e_rows(sizes, raw)
    if "load" not in args.skip:
        rows += load_rows(sizes, raw)
    if "idle" not in args.skip:
        rows += idle_rows(sizes, raw)
    print(f"# tuner-service vs stock keras-tuner{' (smoke)' if args.smoke else ''}\n")
    print(f"Machine: {facts}")
    print(f"Command: python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    print("| figure | stock | ours | stock/ours | note |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(row.markdown())
    print(
        "\nstock/ours > 1: ours is faster (times); for efficiency and trial counts higher is "
        "better, so there < 1 favours ours."
    )
    print(f"Total {time.perf_counter() - started:.0f} s.")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    failed = [r for r in rows if r.note.startswith("FAILED")]
    if "load" in raw and not all(v["ok"] for v in raw["load"].values()):
        failed.append("load")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
