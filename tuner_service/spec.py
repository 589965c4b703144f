"""The study file: load, apply `--set` overrides, validate, report every problem at once.

A study file is plain YAML (the same text can be a Kubernetes ConfigMap key). Validation is
done by pydantic models with ``extra="forbid"`` so a typo is an error, not a silent default, and
``strict=True`` so a value of the wrong type is one too (``epochs: true`` is not 1 epoch,
``baseline: 1`` not ``true``). A key given twice in one mapping is an error (YAML would keep the
last one silently).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_MODEL_REF = re.compile(r"^(mlp|cnn|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*)$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Port = Annotated[int, Field(ge=0, le=65535)]
# status.proto carries trial counts as int32; a budget far beyond any real search is a typo.
MAX_TRIALS = 1_000_000


class SpecError(Exception):
    """A study file that cannot be used; ``problems`` lists every ``path: message``."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun} in the study file:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BayesianTuner(_Strict):
    type: Literal["bayesian"] = "bayesian"
    impl: Literal["fast", "stock"] = Field(
        "fast",
        description="fast: tuner-service's FastBayesianOptimizationOracle (ms per decision); "
        "stock: keras-tuner's BayesianOptimizationOracle (seconds; kept for comparison)",
    )
    num_initial_points: int | None = Field(None, ge=1, description="random trials before the GP")
    alpha: float = Field(1e-4, gt=0)
    beta: float = Field(2.6, ge=0)


class RandomTuner(_Strict):
    type: Literal["random"]


class HyperbandTuner(_Strict):
    type: Literal["hyperband"]
    max_epochs: int | None = Field(None, ge=2, description="defaults to the study's epochs")
    factor: int = Field(3, ge=2)
    hyperband_iterations: int = Field(1, ge=1)


TunerSpec = Annotated[BayesianTuner | RandomTuner | HyperbandTuner, Field(discriminator="type")]


_DATA_SOURCE = re.compile(r"^(keras:\w+|npz:.+|images:.+|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*)$")
_NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


class DataSpec(_Strict):
    """Where the data comes from and what the task is (see tuner_service/data.py, README)."""

    source: str = Field(
        "keras:fashion_mnist",
        description="keras:<name> (Keras' loader), npz:<path>, images:<dir> (a class-per-folder "
        "tree) or package.module:attr (a function returning the splits)",
    )
    dataset: Literal["fashion_mnist"] = Field("fashion_mnist", description="legacy; see source")
    keys: dict[str, str] = Field(
        default_factory=dict, description="npz only: array names, e.g. {x_train: features}"
    )
    # YAML has no tuples: a list [height, width] is what a study file gives (strict mode refuses
    # list -> tuple coercion, so the field says so explicitly).
    image_size: Annotated[tuple[int, int], Field(strict=False)] = Field(
        (256, 256), description="images only: height, width"
    )
    color_mode: Literal["grayscale", "rgb", "rgba"] = Field("rgb", description="images only")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto: integer or one-hot labels classify, float targets regress"
    )
    num_classes: int | None = Field(None, ge=2, description="classification: labels 0..num_classes-1")
    validation_split: float = Field(0.2, gt=0, lt=1, description="share of train held out")
    max_train_samples: int | None = Field(None, ge=10, description="cap for quick runs (array sources)")
    pipeline: Literal["auto", "tf.data", "numpy"] = Field(
        "auto",
        description="how trials get the data: a tf.data pipeline built once per worker (cached, "
        "prefetched) or the arrays; auto = tf.data for the seed's models, arrays for user models",
    )

    @field_validator("source")
    @classmethod
    def _source_form(cls, v: str) -> str:
        if not _DATA_SOURCE.match(v):
            raise ValueError("must be keras:<name>, npz:<path>, images:<dir> or package.module:attr")
        return v

    @field_validator("keys")
    @classmethod
    def _known_keys(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(_NPZ_KEYS))
        if unknown:
            raise ValueError(f"unknown array role(s) {unknown}; expected some of {list(_NPZ_KEYS)}")
        return v


class ObjectiveSpec(_Strict):
    """``objective: {name: val_mae, direction: min}``: a metric Keras logs and which way is better."""

    name: str = Field(min_length=1)
    direction: Literal["min", "max"] | None = Field(
        None, description="null: inferred from the name with keras-tuner's own rule"
    )


class ComputeSpec(_Strict):
    """How each worker uses its device (see tuner_service/compute.py)."""

    mixed_precision: bool = Field(False, description="float16 maths (bfloat16 on CPU), float32 weights")
    jit_compile: bool | Literal["auto"] = Field(
        "auto", description="XLA-compile train steps; auto = Keras' choice (on for GPUs, off on CPU)"
    )


class EarlyStoppingSpec(_Strict):
    """Stop unpromising trials early (decided by the chief; see tuner_service/stopping.py)."""

    rule: Literal["median", "halving"] = "median"
    # None: the rule's own default, measured on 16 random searches of the Fashion-MNIST sample
    # (docs/results.md): median 1 (43 % fewer epochs, the best trial never stopped), halving 3
    # (at 1 its first rung cut the later best trial on some searches).
    min_epochs: int | None = Field(
        None, ge=1, description="epochs every trial trains before it can stop (median 1, halving 3)"
    )
    min_trials: int = Field(3, ge=1, description="trials to compare with before stopping any")
    reduction_factor: int = Field(3, ge=2, description="halving only: keep the top 1/factor")

    def rule_settings(self) -> dict[str, int]:
        settings = {"min_trials": self.min_trials}
        if self.min_epochs is not None:
            settings["min_epochs"] = self.min_epochs
        if self.rule == "halving":
            settings["reduction_factor"] = self.reduction_factor
        return settings


class StudySpec(_Strict):
    """One hyperparameter search. Field names are the study-file keys."""

    name: str = Field(min_length=1, max_length=40)
    model: str
    tuner: TunerSpec = Field(default_factory=BayesianTuner)
    # The objective's name; `objective: {name, direction}` in the file also sets the direction
    # (tuner_service/objective.py decides it, once, for every reader).
    objective: str = "val_accuracy"
    objective_direction: Literal["min", "max"] | None = Field(
        None, description="set by `objective: {name: ..., direction: min|max}`; null = inferred"
    )
    max_trials: int = Field(10, ge=1, le=MAX_TRIALS)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    executions_per_trial: int = Field(1, ge=1)
    max_retries_per_trial: int = Field(0, ge=0)
    max_consecutive_failed_trials: int = Field(3, ge=1)
    # Fault tolerance (docs/fault-tolerance.md). Workers report every epoch; that is the heartbeat.
    lease_timeout: float = Field(
        300.0, ge=1, description="seconds a worker may stay silent before its trial is reassigned"
    )
    chief_deadline: float = Field(
        300.0, ge=1, description="seconds a worker keeps retrying an unreachable chief, then exits"
    )
    worker_deadline: float = Field(
        600.0,
        ge=0,
        description="seconds the chief waits with no call from any worker while trials remain, then "
        "exits 1 with its state saved (0: wait forever)",
    )
    seed: int | None = 42
    data: DataSpec = Field(default_factory=DataSpec)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    directory: str = "runs"
    metrics_port: Port = 9090
    status_port: Port = 8001
    baseline: bool = Field(True, description="also train the seed's baseline (mlp/cnn only)")
    retrain_best: bool = Field(True, description="retrain the best trial and test it at the end")
    # Off (null) by default so a search reproduces stock keras-tuner exactly.
    early_stopping: EarlyStoppingSpec | None = None
    tensorboard: bool = Field(
        False, description="write each trial's TensorBoard logs (with HParams) under <study>/tensorboard"
    )

    @model_validator(mode="before")
    @classmethod
    def _objective_mapping(cls, v: Any) -> Any:
        # `objective: {name: val_mae, direction: min}` -> objective + objective_direction.
        if isinstance(v, dict) and isinstance(v.get("objective"), dict):
            try:
                obj = ObjectiveSpec.model_validate(v["objective"])
            except ValidationError as err:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
                raise ValueError(f"objective: {problems}") from None
            v = {**v, "objective": obj.name}
            if obj.direction is not None:
                v["objective_direction"] = obj.direction
        return v

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be lower-case letters, digits and '-' (a DNS label)")
        return v

    @field_validator("model")
    @classmethod
    def _model_ref(cls, v: str) -> str:
        if not _MODEL_REF.match(v):
            raise ValueError("must be 'mlp', 'cnn' or 'package.module:attr'")
        return v

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _early_stopping_shorthand(cls, v: Any) -> Any:
        # `early_stopping: median` is short for `{rule: median}`; `false`/`off` turns it off.
        if v is False or v in ("off", "none"):
            return None
        if v is True:
            return {}
        return {"rule": v} if isinstance(v, str) else v

    @field_validator("tuner", mode="before")
    @classmethod
    def _tuner_shorthand(cls, v: Any) -> Any:
        # `tuner: random` is accepted as short for `tuner: {type: random}`; a mapping without a
        # type (e.g. only `--set tuner.num_initial_points=4`) is the default, Bayesian.
        if isinstance(v, dict) and "type" not in v:
            return {"type": "bayesian", **v}
        return {"type": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _early_stopping_fits_tuner(self) -> StudySpec:
        if self.early_stopping is not None and isinstance(self.tuner, HyperbandTuner):
            raise ValueError("early_stopping: not with tuner 'hyperband', which stops trials itself")
        return self

    @property
    def project_dir(self) -> Path:
        return Path(self.directory) / self.name

    @property
    def is_seed_model(self) -> bool:
        return self.model in ("mlp", "cnn")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {line}; first on line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml(text: str) -> Any:
    """One YAML document, keys unique (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_error(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line."""
    return " ".join(str(err).split())


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``["tuner.type=random", "max_trials=5"]`` into a nested dict (values are YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SpecError("--set", [f"{pair!r}: expected key=value"])
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError("--set", [f"{key}: conflicts with another --set"])
        try:
            node[parts[-1]] = _yaml(raw) if raw else ""
        except yaml.YAMLError as err:
            raise SpecError("--set", [f"{key}: not valid YAML: {_yaml_error(err)}"]) from None
    return out


# Sections whose `type` selects a variant: a new type replaces the section, since options of
# one tuner mean nothing to another (`--set tuner=random` over a file's bayesian options).
_TYPED_SECTIONS = {"tuner"}


def _typed(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if key in _TYPED_SECTIONS:
            below, value = _typed(below), _typed(value)
            if isinstance(below, dict) and isinstance(value, dict):
                if value.get("type", below.get("type")) != below.get("type", "bayesian"):
                    merged[key] = value
                    continue
        if isinstance(value, dict) and isinstance(below, dict):
            merged[key] = _merge(below, value)
        else:
            merged[key] = value
    return merged


def _is_union_tag(part: Any) -> bool:
    return part in ("bayesian", "random", "hyperband", "bool", "int", "float", "str") or str(part).startswith(
        "literal["
    )


def _format(err: ValidationError) -> list[str]:
    problems: dict[str, list[str]] = {}  # one line per path: a union's members say "or"
    for e in err.errors():
        # Drop pydantic's union-member tags ("bayesian", "bool", "literal['auto']") so paths
        # read like the file.
        loc = [str(p) for p in e["loc"] if not _is_union_tag(p)]
        path = ".".join(loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"].endswith("_type"):  # strict types: say what was given, as YAML spells it
            msg = f"{msg}, got {json.dumps(e['input'], default=str)}"
        problems.setdefault(path, []).append(msg)
    return [f"{path}: {' or '.join(dict.fromkeys(msgs))}" for path, msgs in problems.items()]


def validate(raw: Any, source: str = "study") -> StudySpec:
    if not isinstance(raw, dict):
        raise SpecError(source, ["(top level): expected a mapping of study keys"])
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(source, _format(err)) from None


def load(path: str | Path | None, overrides: list[str] | None = None) -> StudySpec:
    """Read a study file (or none: overrides only), apply overrides, validate."""
    raw: Any = {}
    source = str(path) if path else "--set"
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise SpecError(source, [f"cannot read: {err.strerror}"]) from None
        except UnicodeDecodeError as err:
            raise SpecError(source, [f"not a text file (byte {err.start} is not UTF-8)"]) from None
        try:
            raw = _yaml(text) or {}
        except yaml.YAMLError as err:
            raise SpecError(source, [f"not valid YAML: {_yaml_error(err)}"]) from None
    if overrides:
        if not isinstance(raw, dict):
            raise SpecError(source, ["(top level): expected a mapping of study keys"])
        raw = _merge(raw, parse_overrides(overrides))
    return validate(raw, source)


def dump(spec: StudySpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
