"""Command line: thin subcommands (run, chief, worker, baseline, results, status, experiment, report).

Heavy imports (TensorFlow, keras-tuner, gRPC) happen inside the subcommands so ``--help`` and
spec errors are instant. Exit codes: 0 ok, 1 the search failed, 2 bad input (study file,
environment, model reference), 130 interrupted (a chief stopped by a signal: 128 + the signal,
so 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from tuner_service import spec as spec_module

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
METRICS_PORT_ENV = "TUNER_SERVICE_METRICS_PORT"
STATUS_PORT_ENV = "TUNER_SERVICE_STATUS_PORT"
# Seconds a chief or worker keeps serving /metrics after its work, so a last scrape sees final values.
METRICS_LINGER_ENV = "TUNER_SERVICE_METRICS_LINGER"


class UsageError(Exception):
    """Bad input from the user: reported on one line, exit code 2."""


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _load_spec(args: argparse.Namespace) -> spec_module.StudySpec:
    return spec_module.load(args.config, args.set)


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise UsageError(f"{name}={raw!r}: expected a port number (0 turns it off)")
    return int(raw)


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name) or ""
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise UsageError(f"{name}={raw!r}: expected seconds between 0 and 3600")
    return value


def _chief_ports(spec: spec_module.StudySpec) -> tuple[int, int, float]:
    """(metrics port, status port, linger seconds): the study's, overridden by the environment."""
    return (
        _env_port(METRICS_PORT_ENV, spec.metrics_port),
        _env_port(STATUS_PORT_ENV, spec.status_port),
        _env_seconds(METRICS_LINGER_ENV, 0.0),
    )


def _serve_chief_observability(
    spec: spec_module.StudySpec, chief: Any, host: str, ports: tuple[int, int, float], stack: ExitStack
) -> None:
    """Start the chief's /metrics and status servers (port 0 = off); stop them when ``stack`` closes."""
    from tuner_service.metrics import ChiefMetrics, serve
    from tuner_service.status import endpoints
    from tuner_service.status.history import HISTORY_FILE
    from tuner_service.status.server import make_status_server

    metrics_port, status_port, linger = ports
    oracle = chief.oracle
    direction = oracle.objective.direction
    bound = {"metrics_port": 0, "status_port": 0}
    try:
        if metrics_port:
            metrics = ChiefMetrics(
                chief.ledger,
                objective=spec.objective,
                direction=direction,
                tuner=spec.tuner.type,
                model=spec.model,
                lease_seconds=spec.lease_timeout,  # "missing" agrees with reassignment
            ).attach(chief.servicer)
            server = serve(metrics.registry, metrics_port, host)
            stack.callback(server.close)
            bound["metrics_port"] = server.port
        if status_port:
            status = make_status_server(
                chief.ledger,
                f"{host}:{status_port}",
                objective=spec.objective,
                direction=direction,
                history_path=spec.project_dir / HISTORY_FILE,
                security=chief.security,  # the oracle port's auth and TLS
            ).start()
            stack.callback(status.close)
            bound["status_port"] = status.port
    except OSError as err:
        raise UsageError(f"cannot serve metrics or status on {host} ({err})") from None
    endpoints.write(spec.project_dir, host, **bound)
    if linger and metrics_port:
        stack.callback(time.sleep, linger)  # runs first on exit: both servers still answer


# -- subcommands -----------------------------------------------------------------------------
def cmd_chief(args: argparse.Namespace) -> int:
    spec = _load_spec(args)
    ports = _chief_ports(spec)  # bad settings fail before TensorFlow loads
    from tuner_service.auth import ServerSecurity

    security = ServerSecurity.from_env(os.environ)  # token auth and TLS of both gRPC ports
    _quiet_tensorflow()
    from tuner_service import compat
    from tuner_service.chief.chief import Chief
    from tuner_service.models import load_hypermodel
    from tuner_service.tuners import build_tuner
    from tuner_service.worker import Role

    compat.check_version()
    compat.install_atomic_json()  # a chief killed mid-write must not leave a corrupt oracle.json
    role = Role.from_env(os.environ, chief=True)
    role.export()
    from tuner_service import compute

    compute.configure_devices(spec.compute)  # the final retrain trains as the trials did
    hypermodel = compute.for_study(load_hypermodel(spec.model), spec.compute)
    resumed = (spec.project_dir / "oracle.json").exists()
    # The chief builds the same tuner as the workers: keras-tuner declares the search space
    # and, if this storage already holds a search, reloads it (a restarted chief resumes).
    tuner = build_tuner(spec, hypermodel)
    tuner.save()
    chief = Chief(spec, tuner.oracle, address=role.address, security=security)
    with ExitStack() as stack:  # metrics and status stay up until the chief exits
        _serve_chief_observability(spec, chief, role.oracle_ip, ports, stack)
        return _serve_chief(spec, chief, tuner, resumed)


def _serve_chief(spec: spec_module.StudySpec, chief: Any, tuner: Any, resumed: bool) -> int:
    from tuner_service import kube
    from tuner_service.results import finalize

    chief.install_signal_handlers()
    # Kubernetes Events (`kubectl describe pod`, `kubectl get events`); a no-op outside a pod.
    reason = kube.SEARCH_RESUMED if resumed else kube.SEARCH_STARTED
    kube.publish_event(reason, f"study {spec.name}: {spec.tuner.type} search, {spec.max_trials} trials")
    outcome = chief.serve()
    logging.info("search %s %s", outcome.state, outcome.message)
    if outcome.state == "interrupted":
        # The shell convention, 128 + signal: 143 for Kubernetes' SIGTERM, 130 for Ctrl-C.
        return 128 + chief.stop_signal if chief.stop_signal else EXIT_INTERRUPTED
    if outcome.state == "failed":
        kube.publish_event(kube.SEARCH_FAILED, f"study {spec.name}: {outcome.message}", event_type="Warning")
    results = finalize(spec, tuner, outcome.state)
    logging.info("results: %s", spec.project_dir / "results.json")
    if outcome.state == "failed":
        print(f"search failed: {outcome.message}", file=sys.stderr)
        return EXIT_FAILED
    summary = (
        f"best {spec.objective} {results.get('best_val_score')}, test accuracy {results.get('test_accuracy')}"
    )
    kube.publish_event(kube.SEARCH_FINISHED, f"study {spec.name}: {summary}")
    return EXIT_OK if results.get("trials_completed") else EXIT_FAILED


def cmd_worker(args: argparse.Namespace) -> int:
    spec = _load_spec(args)
    metrics_port = _env_port(METRICS_PORT_ENV, 0)  # pods and `run` set it; off by default
    linger = _env_seconds(METRICS_LINGER_ENV, 0.0) if metrics_port else 0.0
    _quiet_tensorflow()
    from tuner_service import compat
    from tuner_service.client import ChiefUnreachable, NotAuthorized, SearchFailed, SearchFinished
    from tuner_service.worker import Role, Worker

    compat.check_version()
    role = Role.from_env(os.environ, chief=False)
    metrics = None
    if metrics_port:
        from tuner_service.metrics import WorkerMetrics, serve

        metrics = WorkerMetrics(spec.name, role.tuner_id)
        try:
            serve(metrics.registry, metrics_port)
        except OSError as err:
            raise UsageError(f"{METRICS_PORT_ENV}={metrics_port}: cannot serve metrics ({err})") from None
    try:
        Worker(spec, role, chief_deadline=args.chief_deadline, metrics=metrics).run()
        time.sleep(linger)  # a last scrape sees the last epoch
    except ChiefUnreachable as err:
        print(f"worker {role.tuner_id}: giving up: {err}", file=sys.stderr)
        return EXIT_FAILED
    except SearchFinished as err:
        print(f"worker {role.tuner_id}: nothing to do: {err}", file=sys.stderr)
        return EXIT_OK
    except SearchFailed as err:
        print(f"worker {role.tuner_id}: the chief ended the search: {err}", file=sys.stderr)
        return EXIT_FAILED
    except NotAuthorized as err:  # a wrong or missing token: the environment is wrong
        print(f"worker {role.tuner_id}: refused by the chief: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _search(spec: spec_module.StudySpec, args: argparse.Namespace, overrides: list[str]) -> int:
    """A local chief + workers search (shared by `run` and `experiment`); its exit code."""
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if not spec.is_seed_model:
        # Fail fast, in this process, on a user model that cannot be imported.
        _quiet_tensorflow()
        from tuner_service.models import load_hypermodel

        load_hypermodel(spec.model)
    from tuner_service.local import LocalRun
    from tuner_service.progress import Progress

    run = LocalRun(spec, args.config, overrides, workers=args.workers)
    print(f"study {spec.name!r}: chief + {args.workers} workers, logs in {run.log_dir}")
    run.start()
    if run.metrics_port:
        print(f"metrics: http://{run.host}:{run.metrics_port}/metrics")
    if spec.status_port:
        print(f"watch it: tuner-service status --config {args.config} --watch")
    progress = Progress(spec, enabled=not args.no_progress)
    try:
        with progress:
            code = run.wait(progress.update)
    except KeyboardInterrupt:
        print("interrupted: stopping workers and chief...", file=sys.stderr)
        run.stop()
        return EXIT_INTERRUPTED
    if code != 0:
        print(f"search failed (exit {code}); see {run.log_dir}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    spec = _load_spec(args)
    code = _search(spec, args, args.set)
    if code != 0:
        return code
    from tuner_service.results import load_results
    from tuner_service.table import print_results

    results = load_results(spec)
    if results:
        print_results(results)
    return EXIT_OK


def cmd_baseline(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.model:
        overrides.append(f"model={args.model}")
    if not args.config and not any(o.startswith("name=") for o in overrides):
        overrides.append(f"name=baseline-{args.model or 'mlp'}")
    spec = spec_module.load(args.config, overrides)
    if not spec.is_seed_model:
        raise UsageError(f"model {spec.model!r}: baselines exist for 'mlp' and 'cnn' only")
    _quiet_tensorflow()
    from tuner_service.results import run_baseline

    result = run_baseline(spec)
    print(json.dumps(result, indent=2))
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    spec = _load_spec(args)
    from tuner_service.results import load_results
    from tuner_service.table import print_results

    results = load_results(spec)
    if results is None:
        raise UsageError(f"no results at {spec.project_dir / 'results.json'} (has the search run?)")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_results(results)
    return EXIT_OK


def cmd_experiment(args: argparse.Namespace) -> int:
    from tuner_service import experiment

    if args.repeats < 0:
        raise UsageError("--repeats must be 0 or more")
    overrides = experiment.experiment_overrides(args.model, args.config, args.set)
    spec = spec_module.load(args.config, overrides)
    experiment.check_fresh(spec)
    _quiet_tensorflow()
    print(f"[1/3] baseline {spec.model}: train and test the hand-built model", flush=True)
    experiment.run_baseline_step(spec)
    print("[2/3] search (validation data only), then retrain the best and test it", flush=True)
    # Chief and workers read one study file; the resolved one is also the experiment's record.
    study = experiment.write_study(spec)
    args.config = str(study)
    code = _search(spec, args, [])
    if code != 0:
        return code
    print(f"[3/3] comparison ({args.repeats} more retrains of each) and report", flush=True)
    command = shlex.join(["tuner-service", *(args.argv or [])])
    cmp = experiment.finish(spec, command, repeats=args.repeats)
    from tuner_service.report import write_report

    write_report(spec)
    print(experiment.markdown(cmp))
    print(f"written: {spec.project_dir / experiment.EXPERIMENT_MD}, {spec.project_dir / 'report.html'}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    spec = _load_spec(args)
    from tuner_service.report import write_report

    path = write_report(spec)
    print(f"report: {path} (and {path.with_suffix('.md').name})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    if bool(args.config) == bool(args.chief):
        raise UsageError("give either --config (the study file) or --chief host:port")
    if args.chief and (":" not in args.chief or not args.chief.rsplit(":", 1)[1].isdigit()):
        raise UsageError(f"--chief {args.chief!r}: expected host:port")
    from tuner_service.status import cli as status_cli

    if args.chief:
        source = status_cli.Source.for_chief(args.chief)
    else:
        spec = _load_spec(args)
        port = _env_port(STATUS_PORT_ENV, spec.status_port)
        source = status_cli.Source.for_study(spec.project_dir, spec.name, port, spec.objective)
    return status_cli.main(source, as_json=args.json, follow=args.watch, wait=args.wait)


# -- parser ----------------------------------------------------------------------------------
def _study_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, help="study file (YAML)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a study key, e.g. --set tuner.type=random (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuner-service", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a search locally: a chief and N workers as processes")
    _study_args(p)
    p.add_argument("--workers", "-w", type=int, default=2)
    p.add_argument("--no-progress", action="store_true", help="plain log lines, no live table")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("chief", help="pod entrypoint: serve the oracle (env: KERASTUNER_*)")
    _study_args(p)
    p.set_defaults(func=cmd_chief)

    p = sub.add_parser("worker", help="pod entrypoint: train trials (env: KERASTUNER_*)")
    _study_args(p)
    p.add_argument(
        "--chief-deadline",
        type=float,
        default=None,
        help="give up after the chief is unreachable this long (seconds; default: the study's "
        "chief_deadline)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("baseline", help="train and test the seed's untuned baseline")
    _study_args(p, required=False)
    p.add_argument("--model", choices=["mlp", "cnn"])
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("results", help="print a finished search's results")
    _study_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser(
        "experiment",
        help="the seed's protocol: baseline, search, retrain best, test; writes a comparison table",
    )
    _study_args(p, required=False)
    p.add_argument("--model", required=True, choices=["mlp", "cnn"])
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="also retrain baseline and best N times each and report mean test accuracy (0: off)",
    )
    p.add_argument("--workers", "-w", type=int, default=2)
    p.add_argument("--no-progress", action="store_true", help="plain log lines, no live table")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("report", help="write <directory>/<name>/report.html and report.md of a search")
    _study_args(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("status", help="a search's live state from the chief's status API")
    _study_args(p, required=False)
    p.add_argument("--chief", metavar="HOST:PORT", help="the chief's status address (instead of --config)")
    p.add_argument("--watch", action="store_true", help="redraw on every event until the search ends")
    p.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --watch: how long to wait for a chief that is still starting (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output (JSON lines with --watch)")
    p.set_defaults(func=cmd_status)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input, imported lazily (their modules pull in TensorFlow)."""
    errors: list[type[Exception]] = [spec_module.SpecError, UsageError]
    for module, name in (
        ("tuner_service.worker", "EnvError"),
        ("tuner_service.models", "ModelError"),
        ("tuner_service.tuners", "TunerConfigError"),
        ("tuner_service.data", "DataError"),
        ("tuner_service.experiment", "ExperimentError"),
        ("tuner_service.report", "ReportError"),
        ("tuner_service.auth", "SecurityConfigError"),
    ):
        mod = sys.modules.get(module)
        if mod is not None:
            errors.append(getattr(mod, name))
    return tuple(errors)


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown.

    Unloading TensorFlow at exit takes 1-4 s on a busy 2-core node; a chief or worker has
    written everything it owns by the time its subcommand returns, so the pod (and a local
    run waiting on it) should not wait for that. Logs and standard streams are flushed first.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """The program entry. With ``argv=None`` (a real process) the pod entrypoints ``chief`` and
    ``worker`` exit at once when done (see :func:`_exit_now`); callers in-process pass ``argv``.
    """
    code = _main(argv)
    if argv is None and sys.argv[1:2] and _is_pod_entrypoint(sys.argv[1:]):
        _exit_now(code)
    return code


def _is_pod_entrypoint(args: Sequence[str]) -> bool:
    command = next((a for a in args if not a.startswith("-")), "")
    return command in ("chief", "worker")


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - user errors become one line, others propagate
        if isinstance(err, _user_errors()):
            print(f"tuner-service {args.command}: {err}", file=sys.stderr)
            return EXIT_USAGE
        raise
