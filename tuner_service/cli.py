"""Command line: thin subcommands (run, chief, worker, baseline, results, status, list, experiment, report).

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
from collections.abc import Callable, Sequence

from tuner_service import process, quiet
from tuner_service import spec as spec_module
from tuner_service.process import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError


def _prepare_tensorflow(verbose: bool) -> None:
    """Before TensorFlow loads: its backend, and its C++ noise off unless ``-v`` (see quiet.py)."""
    quiet.configure(verbose)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _load_spec(args: argparse.Namespace) -> spec_module.StudySpec:
    return spec_module.load(args.config, args.set)


# -- subcommands: parse, then hand over to the module that owns the concern ------------------
def cmd_chief(args: argparse.Namespace) -> int:
    from tuner_service.chief.run import run_chief

    return run_chief(_load_spec(args), os.environ)


def cmd_worker(args: argparse.Namespace) -> int:
    from tuner_service.worker import run_worker

    return run_worker(_load_spec(args), os.environ, chief_deadline=args.chief_deadline)


def cmd_run(args: argparse.Namespace) -> int:
    from tuner_service.local import run_search

    spec = _load_spec(args)
    code = run_search(
        spec,
        args.config,
        args.set,
        workers=args.workers,
        show_progress=not args.no_progress,
        fresh=args.fresh,
        verbose=args.verbose,
    )
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
    from tuner_service.results import run_baseline

    result = run_baseline(spec)
    per_sample = ("test_correct", "test_errors")  # kept in baseline.json for pairing, not for reading
    print(json.dumps({k: v for k, v in result.items() if k not in per_sample}, indent=2))
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    spec = _load_spec(args)
    from tuner_service.results import current
    from tuner_service.study import files
    from tuner_service.table import print_results

    results = current(spec)  # a search that has not finished: what completed, marked partial
    if results is None:
        raise UsageError(f"no results at {spec.project_dir / files.RESULTS} (has the search run?)")
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
    command = shlex.join(["tuner-service", *(args.argv or [])])
    return experiment.run(
        spec, command, workers=args.workers, repeats=args.repeats, show_progress=not args.no_progress
    )


def cmd_report(args: argparse.Namespace) -> int:
    spec = _load_spec(args)
    from tuner_service.report import write_report

    path = write_report(spec)
    print(f"report: {path} (and {path.with_suffix('.md').name})")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tuner_service import studies

    return studies.main(Path(args.dir), as_json=args.json)


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
        port = process.env_port(os.environ, process.STATUS_PORT, spec.status_port)
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
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start over: remove the study's directory (its previous search) first",
    )
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

    p = sub.add_parser("list", help="every study under a directory: state, progress, best, last update")
    p.add_argument(
        "dir",
        nargs="?",
        default=spec_module.StudySpec.model_fields["directory"].default,
        metavar="DIR",
        help="where the studies live (the study files' `directory`; default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

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
        ("tuner_service.models", "ModelError"),
        ("tuner_service.tuners", "TunerConfigError"),
        ("tuner_service.data", "DataError"),
        ("tuner_service.objective", "ObjectiveError"),
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
    if argv is None:
        process.die_with_parent(os.environ)  # a child of `run` never outlives it
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
    _prepare_tensorflow(args.verbose)
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
