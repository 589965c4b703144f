"""The worker: asks the chief for trials and trains them until told the search is over."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keras_tuner.engine.trial import TrialStatus

from tuner_service import compat, compute, data
from tuner_service.chief.ledger import read_snapshot
from tuner_service.client import ServiceOracleClient
from tuner_service.models import load_hypermodel
from tuner_service.spec import StudySpec
from tuner_service.tuners import ServiceTuner, build_oracle, build_tuner

if TYPE_CHECKING:
    from tuner_service.metrics import WorkerMetrics

log = logging.getLogger(__name__)

TUNER_ID = "KERASTUNER_TUNER_ID"
ORACLE_IP = "KERASTUNER_ORACLE_IP"
ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
JOB_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes on the pods of an Indexed Job


class EnvError(Exception):
    """The process environment does not describe a valid chief or worker."""


@dataclass(frozen=True)
class Role:
    """Who this process is, read only from keras-tuner's environment contract."""

    tuner_id: str
    oracle_ip: str
    oracle_port: int

    @property
    def address(self) -> str:
        return f"{self.oracle_ip}:{self.oracle_port}"

    @property
    def is_chief(self) -> bool:
        return "chief" in self.tuner_id

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, chief: bool) -> Role:
        problems = []
        tuner_id = environ.get(TUNER_ID)
        if not tuner_id and not chief and environ.get(JOB_INDEX, "").isdigit():
            tuner_id = f"worker-{environ[JOB_INDEX]}"
        if chief:
            tuner_id = tuner_id or "chief"
            if "chief" not in tuner_id:
                problems.append(f"{TUNER_ID}={tuner_id!r}: a chief's id must contain 'chief'")
        elif not tuner_id:
            problems.append(f"{TUNER_ID} (or {JOB_INDEX}) is not set")
        elif "chief" in tuner_id:
            problems.append(f"{TUNER_ID}={tuner_id!r}: a worker's id must not contain 'chief'")
        ip = environ.get(ORACLE_IP) or ("0.0.0.0" if chief else "")
        if not ip:
            problems.append(f"{ORACLE_IP} is not set (the chief's address)")
        port = environ.get(ORACLE_PORT, "")
        if not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"{ORACLE_PORT}={port!r}: expected a TCP port number")
        if problems:
            raise EnvError("; ".join(problems))
        return cls(str(tuner_id), ip, int(port))

    def export(self) -> None:
        """keras-tuner's Tuner reads the contract from os.environ; make it complete."""
        os.environ[TUNER_ID] = self.tuner_id
        os.environ[ORACLE_IP] = self.oracle_ip
        os.environ[ORACLE_PORT] = str(self.oracle_port)


def freeze_startup_objects() -> None:
    """Exempt everything alive now (TensorFlow, Keras, the data) from garbage collection.

    keras-tuner runs ``gc.collect()`` twice before every trial (``Tuner._try_build`` and
    ``keras.backend.clear_session``); each walks every object TensorFlow ever allocated, about
    0.2-0.5 s per call on a 2-core node. Freezing the start-up heap makes those collections walk
    only what trials create (measured: 1.0 s -> 0.07 s between trials; docs/performance.md).
    """
    # No gc.collect() first: it would walk that whole heap once more (~0.5 s at start-up) to
    # free a few MB of import-time garbage.
    gc.freeze()


class Worker:
    """Loads the data once, then runs keras-tuner's search loop against the chief."""

    def __init__(
        self,
        spec: StudySpec,
        role: Role,
        *,
        chief_deadline: float | None = None,
        metrics: WorkerMetrics | None = None,
    ):
        self.spec = spec
        self.role = role
        self.chief_deadline = spec.chief_deadline if chief_deadline is None else chief_deadline
        self.metrics = metrics
        self.client: ServiceOracleClient | None = None

    def build_tuner(self) -> ServiceTuner:
        self.role.export()
        compat.install_atomic_json()  # a pod killed mid-write must not corrupt shared state
        hypermodel = compute.for_study(load_hypermodel(self.spec.model), self.spec.compute)
        oracle = build_oracle(self.spec)
        tuner = build_tuner(self.spec, hypermodel, oracle, epoch_hooks=[self._report], backups=True)
        # keras-tuner wrapped the oracle in its stock client; ours backs off and gives up.
        self.client = ServiceOracleClient(
            oracle,
            self.role.address,
            self.role.tuner_id,
            chief_deadline=self.chief_deadline,
            search_state=self._search_state,
        )
        tuner.oracle = self.client
        return tuner

    def _search_state(self) -> dict[str, Any] | None:
        """The chief's last saved state on the shared storage (see chief/ledger.py)."""
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
        splits = data.load(self.spec.data, self.spec.seed)  # once per process, not per trial
        log.info("worker %s: data %s, devices %s", self.role.tuner_id, splits.sizes(), devices)
        tuner = self.build_tuner()
        callbacks = []
        if self.metrics is not None:
            self.metrics.samples_per_epoch = len(splits.x_train)
            callbacks.append(self.metrics.callback())
        fit_data: tuple = (splits.x_train, splits.y_train)
        fit_kwargs: dict = {
            "validation_data": (splits.x_val, splits.y_val),
            "batch_size": self.spec.batch_size,
        }
        if compute.wants_tf_data(self.spec.data.pipeline, self.spec.is_seed_model):
            train, val = compute.datasets(
                *fit_data, *fit_kwargs["validation_data"], self.spec.batch_size, self.spec.seed
            )
            fit_data, fit_kwargs = (train,), {"validation_data": val, "shuffle": False}  # it shuffles
        freeze_startup_objects()
        tuner.search(*fit_data, epochs=self.spec.epochs, callbacks=callbacks, verbose=0, **fit_kwargs)
        log.info("worker %s: search over", self.role.tuner_id)
