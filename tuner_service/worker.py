"""The worker: asks the chief for trials and trains them until told the search is over.

Exit codes (``run_worker``): 0 the search is over, or the worker was told to stop (SIGTERM) and
handed its trial back; 1 the search failed, or a newer process with this tuner id took over; 2 bad
input, or ``TUNER_SERVICE_REQUIRE_GPU=1`` and no GPU visible; 3 the chief stayed unreachable for
``chief_deadline``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras
from keras_tuner.engine.trial import TrialStatus

from tuner_service import compat, compute, data, process, training
from tuner_service.client import ServiceOracleClient
from tuner_service.handover import DEFAULT_FINISH_WITHIN, HandedOver, Handover
from tuner_service.models import load_hypermodel
from tuner_service.process import Role
from tuner_service.spec import StudySpec
from tuner_service.study import files
from tuner_service.study.ledger import read_snapshot
from tuner_service.tuners import ServiceTuner, build_oracle, build_tuner

if TYPE_CHECKING:
    from tuner_service.metrics import WorkerMetrics

log = logging.getLogger(__name__)


def tensorboard_callback(spec: StudySpec) -> Any:
    """Keras' TensorBoard callback over ``<study>/tensorboard``; keras-tuner gives each trial its
    own folder (``<trial id>/execution<n>``) and adds its HParams summary, so
    ``tensorboard --logdir <study>/tensorboard`` compares the trials."""
    import keras

    return keras.callbacks.TensorBoard(log_dir=str(files.StudyDir(spec.project_dir).tensorboard))


class Worker:
    """Loads the data once, then runs keras-tuner's search loop against the chief."""

    def __init__(
        self,
        spec: StudySpec,
        role: Role,
        *,
        chief_deadline: float | None = None,
        metrics: WorkerMetrics | None = None,
        handover: Handover | None = None,
        require_gpu: bool = False,
    ):
        self.spec = spec
        self.role = role
        self.handover = handover
        self.require_gpu = require_gpu
        self.chief_deadline = spec.chief_deadline if chief_deadline is None else chief_deadline
        self.metrics = metrics
        self.client: ServiceOracleClient | None = None

    def build_tuner(self, task: data.Task | None = None) -> ServiceTuner:
        self.role.export()
        compat.install_atomic_json()  # a pod killed mid-write must not corrupt shared state
        hypermodel = compute.for_study(load_hypermodel(self.spec.model, task), self.spec.compute)
        oracle = build_oracle(self.spec)
        tuner = build_tuner(
            self.spec, hypermodel, oracle, epoch_hooks=[self._report], backups=True, handover=self.handover
        )
        # keras-tuner wrapped the oracle in its stock client; ours backs off and gives up.
        self.client = ServiceOracleClient(
            oracle,
            self.role.address,
            self.role.tuner_id,
            chief_deadline=self.chief_deadline,
            search_state=self._search_state,
            stopping=(lambda: self.handover.requested) if self.handover else None,
        )
        tuner.oracle = self.client
        return tuner

    def _search_state(self) -> dict[str, Any] | None:
        """The chief's last saved state on the shared storage (see study/ledger.py)."""
        return read_snapshot(self.spec.project_dir)

    def _report(self, trial: Any, epoch: int, logs: dict) -> bool:
        """Every epoch: progress to the chief, which is also the heartbeat of our lease.

        Raises the client's TrialFenced when the trial was given to another worker; keras-tuner
        then ends the trial here and :meth:`ServiceTuner.on_trial_end` abandons it. Returns True
        (stop training this trial) when the chief answers STOPPED: early stopping.
        """
        assert self.client is not None
        metrics = {k: float(v) for k, v in logs.items()}
        answer = self.client.report_progress(trial.trial_id, metrics, step=epoch)
        if answer.status != TrialStatus.STOPPED:
            return False
        log.info("trial %s: stopped early by the chief after %d epochs", trial.trial_id, epoch + 1)
        return True

    def run(self) -> None:
        devices = compute.configure_devices(self.spec.compute)  # before any op touches a GPU
        if self.require_gpu and not devices["gpu"]:
            # Before the data loads: a GPU pod without its driver libraries fails in seconds, loudly,
            # instead of training on the CPU while it holds the GPU.
            raise process.UsageError(
                f"{process.REQUIRE_GPU}=1 but no GPU is visible to {keras.backend.backend()} "
                "(driver libraries on LD_LIBRARY_PATH? a GPU in the pod's resources?)"
            )
        splits = data.load(self.spec.data, self.spec.seed, self.spec.batch_size)  # once per process
        log.info("worker %s: data %s, devices %s", self.role.tuner_id, splits.sizes(), devices)
        tuner = self.build_tuner(splits.task)
        callbacks = []
        if self.metrics is not None:
            self.metrics.samples_per_epoch = len(splits.train)
            callbacks.append(self.metrics.callback())
        if self.spec.tensorboard:
            callbacks.append(tensorboard_callback(self.spec))
        tf_data = compute.wants_tf_data(self.spec.data.pipeline, self.spec.is_seed_model)
        fit_data, fit_kwargs = training.search_inputs(
            splits, self.spec.batch_size, tf_data=tf_data, seed=self.spec.seed
        )
        process.freeze_startup_heap()
        if self.handover is not None:
            self.handover.searching = True  # SIGTERM now waits for a safe point
        try:
            tuner.search(*fit_data, epochs=self.spec.epochs, callbacks=callbacks, verbose=0, **fit_kwargs)
        except HandedOver as stop:
            self._hand_back(stop)
            raise
        finally:
            if self.handover is not None:
                self.handover.searching = False
        log.info("worker %s: search over", self.role.tuner_id)

    def _hand_back(self, stop: HandedOver) -> None:
        """Tell the chief the trial is released, so the next worker resumes it now (not after the lease)."""
        from tuner_service.client import ChiefUnreachable, SearchFailed, Superseded, TrialFenced

        if stop.trial_id is None or self.client is None:
            return
        try:
            self.client.release_trial(stop.trial_id)
        except (ChiefUnreachable, SearchFailed, Superseded, TrialFenced) as err:
            log.warning("trial %s not handed back (%s); it moves when its lease runs out", stop.trial_id, err)
            return
        stop.handed_back = True
        log.info("trial %s handed back to the chief (%s)", stop.trial_id, stop.where)


def run_worker(spec: StudySpec, environ: Mapping[str, str], *, chief_deadline: float | None = None) -> int:
    """The worker process (``tuner-service worker``): train trials until the search ends; exit code."""
    from tuner_service.client import ChiefUnreachable, NotAuthorized, SearchFailed, SearchFinished, Superseded

    metrics_port = process.env_port(environ, process.METRICS_PORT, 0)  # pods and `run` set it; off by default
    linger = process.env_seconds(environ, process.METRICS_LINGER, 0.0) if metrics_port else 0.0
    require_gpu = process.env_flag(environ, process.REQUIRE_GPU)
    handover = Handover(process.env_seconds(environ, process.HANDOVER_SECONDS, DEFAULT_FINISH_WITHIN))
    compat.check_version()
    role = Role.from_env(environ, chief=False)
    metrics = None
    if metrics_port:
        from tuner_service.metrics import WorkerMetrics, serve

        metrics = WorkerMetrics(spec.name, role.tuner_id)
        try:
            serve(metrics.registry, metrics_port)
        except OSError as err:
            raise process.UsageError(
                f"{process.METRICS_PORT}={metrics_port}: cannot serve metrics ({err})"
            ) from None
    try:
        handover.install()  # the container's main process: SIGTERM is ours to handle
        worker = Worker(
            spec,
            role,
            chief_deadline=chief_deadline,
            metrics=metrics,
            handover=handover,
            require_gpu=require_gpu,
        )
        worker.run()
        time.sleep(linger)  # a last scrape sees the last epoch (SIGTERM cuts it short)
    except HandedOver as stop:
        held = ""
        if stop.trial_id:
            held = f"; trial {stop.trial_id} " + (
                "handed back to the chief"
                if stop.handed_back
                else "not handed back: it moves after its lease"
            )
        print(f"worker {role.tuner_id}: {stop}{held}", file=sys.stderr)
        return process.EXIT_HANDED_OVER
    except (ChiefUnreachable, Superseded, SearchFinished, SearchFailed, NotAuthorized) as err:
        # How the search ended for this worker: what it says, and its exit code.
        words, code = {
            ChiefUnreachable: ("giving up", process.EXIT_CHIEF_UNREACHABLE),
            Superseded: ("fenced", process.EXIT_FAILED),
            SearchFinished: ("nothing to do", process.EXIT_OK),
            SearchFailed: ("the chief ended the search", process.EXIT_FAILED),
            # A wrong or missing token: the environment is wrong.
            NotAuthorized: ("refused by the chief", process.EXIT_USAGE),
        }[type(err)]
        print(f"worker {role.tuner_id}: {words}: {err}", file=sys.stderr)
        return code
    return process.EXIT_OK
