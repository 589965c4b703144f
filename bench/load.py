"""Load test: N simulated workers (lightweight gRPC clients) against a real chief.

Each simulated worker has its own channel and repeats the exact RPC cycle a keras-tuner worker
makes per trial -- ``CreateTrial``, (training: ``--think`` seconds, jittered +-50 %),
``UpdateTrial``, ``GetTrial``, ``EndTrial`` -- until the chief answers STOPPED; the workers'
first calls are spread over one ``--think`` (pods do not start in the same millisecond).
The chief is a real process (``python -m tuner_service chief``, or stock keras-tuner's
``oracle_chief.start_server`` through ``bench.stock_node``) running RandomSearch over the
sleeping hypermodel, so the test measures the server and the protocol, not an oracle's maths.
``--tuner bayesian --preload 500`` instead measures our chief deciding with Bayesian
optimization on a study that already holds 500 completed trials (completed in-process before
the chief starts; the chief resumes them, as a restarted chief would).
Clients run as asyncio coroutines (``grpc.aio``) in a few processes so that they do not starve
the chief of the GIL; they all start together once every client process has imported its libraries.

    python -m bench.load --clients 256 --cycles 3 --think 5
    python -m bench.load --impl ours --tuner bayesian --preload 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from tuner_service.local import free_port

REPO = Path(__file__).resolve().parents[1]
SAMPLE_KERAS_HOME = REPO.parent / "shared" / "data" / "keras"


@dataclass
class LoadResult:
    impl: str
    clients: int
    cycles: int
    think: float
    tuner: str = "random"
    preload: int = 0  # completed trials in the study before the clients start
    rpcs: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    create_p50_ms: float = 0.0
    create_p99_ms: float = 0.0
    create_max_ms: float = 0.0
    other_p99_ms: float = 0.0  # every RPC but CreateTrial
    # The same calls as the chief timed them (its Prometheus histograms; ours only): from the
    # handler's start to its end, lock wait included; no network, client or (de)serialisation.
    server_rpcs: int = 0
    server_p99_ms: float | None = None  # estimated within the histogram's bucket
    server_within_50ms: float | None = None  # exact: share of calls in the <= 50 ms bucket
    server_create_p99_ms: float | None = None
    decision_p99_ms: float | None = None  # the oracle's create_trial alone
    wall: float = 0.0
    trials_completed: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.rpcs / self.wall if self.wall else 0.0

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.trials_completed == self.clients * self.cycles


# -- the client side (runs in its own process) --------------------------------------------------
async def _simulated_worker(address: str, tuner_id: str, think: float, stats: dict) -> None:
    import grpc

    from tuner_service import compat

    pb2 = compat.service_pb2()
    trial_pb = compat.keras_tuner_pb2()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = compat.service_pb2_grpc().OracleStub(channel)
        await asyncio.wait_for(channel.channel_ready(), timeout=180)  # a chief that never came up
        stats["ready"].set_result(None)
        await stats["go"]

        async def call(name: str, request):  # noqa: ANN202 - a protobuf message
            start = time.perf_counter()
            try:
                response = await getattr(stub, name)(request, timeout=60)
            except grpc.aio.AioRpcError as err:
                stats["errors"].append(f"{name}: {err.code().name} {err.details()}")
                return None
            finally:
                stats["latencies"].append((name, time.perf_counter() - start))
            return response

        # Pods never start in the same millisecond: spread the first calls over one trial time.
        await asyncio.sleep(random.uniform(0, think))
        idle_sleep = 0.05
        while True:
            created = await call("CreateTrial", pb2.CreateTrialRequest(tuner_id=tuner_id))
            if created is None:
                return
            trial = created.trial
            if trial.status == trial_pb.TrialStatus.STOPPED:
                return
            if trial.status == trial_pb.TrialStatus.IDLE:
                await asyncio.sleep(idle_sleep)
                idle_sleep = min(idle_sleep * 2, 2.0)
                continue
            idle_sleep = 0.05
            await asyncio.sleep(random.uniform(0.5, 1.5) * think)
            metrics = {"val_accuracy": float(np.random.random())}
            await call(
                "UpdateTrial", pb2.UpdateTrialRequest(trial_id=trial.trial_id, metrics=metrics, step=0)
            )
            await call("GetTrial", pb2.GetTrialRequest(trial_id=trial.trial_id))
            trial.status = trial_pb.TrialStatus.COMPLETED
            await call("EndTrial", pb2.EndTrialRequest(trial=trial))


async def _client_process(address: str, prefix: str, n: int, think: float) -> dict:
    loop = asyncio.get_running_loop()
    readies = [loop.create_future() for _ in range(n)]
    go = loop.create_future()
    shared = {"latencies": [], "errors": [], "go": go}
    tasks = [
        asyncio.create_task(
            _simulated_worker(address, f"{prefix}{i}", think, {**shared, "ready": readies[i]})
        )
        for i in range(n)
    ]
    await asyncio.gather(*readies)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    go.set_result(None)
    await asyncio.gather(*tasks)
    return shared


def client_main(args: argparse.Namespace) -> int:
    stats = asyncio.run(_client_process(args.address, args.prefix, args.clients, args.think))
    print(json.dumps({"latencies": stats["latencies"], "errors": stats["errors"]}), flush=True)
    return 0


# -- the chief's own view: its /metrics --------------------------------------------------------
def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile``: linear within the bucket; ``buckets`` = (le, count)."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower_le  # beyond the last finite bucket: its bound, as Prometheus does
            return lower_le + (le - lower_le) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_le, lower_count = le, count
    return lower_le


def chief_metrics(port: int, timeout: float = 5.0) -> str:
    """The chief's /metrics, read once the clients are done: it lingers after the search for
    this last scrape, and its histograms are cumulative, so they hold every call. "" if it
    never answered within ``timeout``."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() >= deadline:
                return ""
            time.sleep(0.1)


def histogram_buckets(text: str, metric: str, **labels: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of ``metric``'s histogram in ``text``, summed over unnamed labels."""
    from prometheus_client.parser import text_string_to_metric_families

    summed: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != f"{metric}_bucket":
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            le = float(sample.labels["le"])
            summed[le] = summed.get(le, 0.0) + sample.value
    return sorted(summed.items())


def server_side(result: LoadResult, metrics: str) -> None:
    """Fill ``result``'s server-side columns from the chief's histograms."""
    rpc = histogram_buckets(metrics, "tuner_service_rpc_duration_seconds")
    if not rpc:
        return
    result.server_rpcs = int(rpc[-1][1])
    result.server_p99_ms = _ms(histogram_quantile(0.99, rpc))
    result.server_within_50ms = dict(rpc).get(0.05, 0.0) / rpc[-1][1]
    create = histogram_buckets(metrics, "tuner_service_rpc_duration_seconds", method="CreateTrial")
    result.server_create_p99_ms = _ms(histogram_quantile(0.99, create))
    decision = histogram_buckets(
        metrics, "tuner_service_oracle_decision_duration_seconds", operation="create_trial"
    )
    result.decision_p99_ms = _ms(histogram_quantile(0.99, decision))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# -- the orchestrating side -----------------------------------------------------------------------
def _chief_command(
    impl: str, directory: Path, trials: int, tuner: str = "random", preload: int = 0, metrics_port: int = 0
) -> list[str]:
    py = sys.executable
    if impl == "stock":
        if tuner != "random" or preload:
            raise ValueError("the stock chief is measured with random search and an empty study only")
        return [py, "-m", "bench.stock_node", "--directory", str(directory), "--trials", str(trials)]
    study = {
        "name": "load",
        "model": "bench.sleepy:SleepyHyperModel",
        "tuner": {"type": tuner},
        "max_trials": preload + trials,
        "epochs": 1,
        "seed": 1,
        "directory": str(directory),
        "metrics_port": metrics_port,
        "status_port": 0,
        "baseline": False,
        "retrain_best": False,
    }
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    if preload:
        preload_study(path, preload)
    return [py, "-m", "tuner_service", "chief", "-c", str(path)]


def preload_study(study_path: Path, completed: int, tuner_id: str = "chief") -> None:
    """Complete ``completed`` trials of the study in-process, with the study's own oracle.

    The tuner is built as the chief builds it (same space, same storage); each trial is scored
    by the sleepy model's formula. The chief started afterwards (as ``tuner_id``) resumes these
    trials: its tuner file is saved too, without which the chief refuses the study.
    """
    from bench.sleepy import SleepyHyperModel, score
    from tuner_service import spec as spec_module
    from tuner_service.tuners import build_tuner

    tuner = build_tuner(spec_module.load(study_path), SleepyHyperModel())
    oracle = tuner.oracle
    oracle.verbose = 0
    for _ in range(completed):
        trial = oracle.create_trial("preload")
        hp = trial.hyperparameters
        oracle.update_trial(
            trial.trial_id, {"val_accuracy": score(hp.get("x"), hp.get("units"), hp.get("optimizer"))}
        )
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    if hasattr(oracle, "wait_for_refit"):
        oracle.wait_for_refit(timeout=300)  # the saved state carries the latest kernel fit
    tuner.tuner_id = tuner_id
    tuner.save()  # oracle.json and <tuner_id>.json, as a chief that completed them would leave


def _wait_for_chief(chief: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    """Until the chief listens on ``port``; a chief that exits first fails the run with its log."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if chief.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"the chief exited {chief.returncode} before serving: " + " | ".join(tail))
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the chief did not listen on port {port} within {timeout:.0f} s")


def run_load(
    impl: str,
    clients: int,
    cycles: int,
    think: float,
    processes: int = 4,
    timeout: float = 300,
    tuner: str = "random",
    preload: int = 0,
) -> LoadResult:
    result = LoadResult(impl, clients, cycles, think, tuner, preload)
    with tempfile.TemporaryDirectory(prefix=f"bench-load-{impl}-") as tmp:
        directory = Path(tmp)
        port = free_port()
        metrics_port = free_port() if impl == "ours" else 0
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "KERAS_BACKEND": "tensorflow",
            "KERAS_HOME": os.environ.get("KERAS_HOME") or str(SAMPLE_KERAS_HOME),
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": str(port),
            "KERASTUNER_TUNER_ID": "chief",
            "TUNER_SERVICE_METRICS_LINGER": "3",  # /metrics answers after the search: chief_metrics
        }
        chief_log = open(directory / "chief.log", "wb")  # noqa: SIM115
        chief = subprocess.Popen(
            _chief_command(impl, directory, clients * cycles, tuner, preload, metrics_port),
            cwd=REPO,
            env=env,
            stdout=chief_log,
            stderr=subprocess.STDOUT,
        )
        per_process = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
        procs = []
        for i, n in enumerate(x for x in per_process if x):
            argv = [
                sys.executable,
                "-m",
                "bench.load",
                "--client",
                "--address",
                f"127.0.0.1:{port}",
                "--prefix",
                f"sim-{i}-",
                "--clients",
                str(n),
                "--think",
                str(think),
            ]
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        try:
            _wait_for_chief(chief, port, directory / "chief.log", timeout=600)
            for p in procs:  # every channel connected: the chief is up and every client is loaded
                line = p.stdout.readline()
                if line.strip() != "ready":
                    raise RuntimeError(f"a client process failed to start: {line!r}")
            start = time.perf_counter()
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            latencies: list[tuple[str, float]] = []
            errors: list[str] = []
            for p in procs:
                out, _ = p.communicate(timeout=timeout)
                data = json.loads(out.strip().splitlines()[-1])
                latencies += data["latencies"]
                errors += data["errors"]
            result.wall = time.perf_counter() - start
            if metrics_port:
                server_side(result, chief_metrics(metrics_port))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            try:
                chief.wait(timeout=30)
            except subprocess.TimeoutExpired:
                chief.kill()
                chief.wait()
            chief_log.close()
        trials_dir = directory / ("load" if impl == "ours" else "e2e")
        result.trials_completed = -preload  # count those of this run only
        result.trials_completed += sum(
            1
            for f in trials_dir.glob("trial_*/trial.json")
            if json.loads(f.read_text()).get("status") == "COMPLETED"
        )
        ms = np.array([s for _, s in latencies]) * 1000
        create = np.array([s for name, s in latencies if name == "CreateTrial"]) * 1000
        other = np.array([s for name, s in latencies if name != "CreateTrial"]) * 1000
        if len(create):
            result.create_p50_ms = float(np.percentile(create, 50))
            result.create_p99_ms = float(np.percentile(create, 99))
            result.create_max_ms = float(create.max())
        if len(other):
            result.other_p99_ms = float(np.percentile(other, 99))
        result.rpcs, result.errors, result.error_samples = len(ms), len(errors), errors[:5]
        if len(ms):
            result.p50_ms, result.p99_ms, result.max_ms = (
                float(np.percentile(ms, 50)),
                float(np.percentile(ms, 99)),
                float(ms.max()),
            )
    return result


def format_row(r: LoadResult) -> str:
    status = "ok" if r.ok else f"FAILED {r.error_samples[:2]}"
    row = (
        f"load {r.impl:5s} {r.tuner} preload={r.preload} clients={r.clients} rpcs={r.rpcs} errors={r.errors} "
        f"p50={r.p50_ms:7.1f}ms "
        f"p99={r.p99_ms:7.1f}ms max={r.max_ms:7.1f}ms rps={r.rps:6.0f} wall={r.wall:5.1f}s "
        f"trials={r.trials_completed}/{r.clients * r.cycles} {status}"
    )
    if r.server_p99_ms is not None:
        row += (
            f"\n  chief's view: {r.server_rpcs} rpcs, p99~{r.server_p99_ms:.1f}ms "
            f"({100 * r.server_within_50ms:.2f}% within 50 ms), "
            f"CreateTrial p99~{r.server_create_p99_ms:.1f}ms, "
            f"decision p99~{r.decision_p99_ms or 0:.1f}ms (~: within a histogram bucket)"
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--cycles", type=int, default=3, help="trials per simulated worker")
    parser.add_argument("--think", type=float, default=5.0, help="mean seconds of 'training' per trial")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--impl", choices=("stock", "ours"), action="append", help="default: both")
    parser.add_argument(
        "--tuner", choices=("random", "bayesian"), default="random", help="our chief's oracle"
    )
    parser.add_argument("--preload", type=int, default=0, help="completed trials before the clients start")
    parser.add_argument("--json", help="write the results here")
    # internal: one client process
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="sim-", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(args)
    results = []
    for impl in args.impl or ("stock", "ours"):
        r = run_load(
            impl,
            args.clients,
            args.cycles,
            args.think,
            args.processes,
            tuner=args.tuner,
            preload=args.preload,
        )
        print(format_row(r), file=sys.stderr, flush=True)
        results.append(r)
    if args.json:
        Path(args.json).write_text(
            json.dumps([{**asdict(r), "rps": r.rps, "ok": r.ok} for r in results], indent=1)
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
