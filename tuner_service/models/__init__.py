"""Hypermodels: the seed's (`mlp`, `cnn`) and any user's, named as ``package.module:attr``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras_tuner

if TYPE_CHECKING:
    from tuner_service.data import Task


class ModelError(Exception):
    """The study's ``model`` cannot be turned into a hypermodel."""


def load_hypermodel(ref: str, task: Task | None = None) -> keras_tuner.HyperModel | Callable[..., Any]:
    """Resolve a study's ``model``: a seed name, a HyperModel class/instance or a build function.

    The seed's hypermodels shape their input and output by ``task`` (the study's data;
    Fashion-MNIST when None); a user's hypermodel is the user's to shape.

    A user's ``attr`` may be a ``keras_tuner.HyperModel`` subclass (instantiated without
    arguments), an instance of one, or a ``build(hp) -> keras.Model`` function.
    """
    from tuner_service.models import seed

    if ref in seed.HYPERMODELS:
        return seed.HYPERMODELS[ref](task)
    module_name, _, attr_path = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelError(
            f"model {ref!r}: cannot import module {module_name!r} ({err}); is it installed or on PYTHONPATH?"
        ) from None
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"model {ref!r}: {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if inspect.isclass(obj) and issubclass(obj, keras_tuner.HyperModel):
        try:
            return obj()
        except TypeError as err:
            raise ModelError(f"model {ref!r}: cannot instantiate without arguments: {err}") from None
    if isinstance(obj, keras_tuner.HyperModel):
        return obj
    expected = "expected a keras_tuner.HyperModel subclass or instance, or a build(hp) function"
    if not callable(obj) or inspect.isclass(obj):
        raise ModelError(f"model {ref!r}: {expected}; got {_describe(obj)}")
    problem = _build_signature_problem(obj)
    if problem:
        raise ModelError(f"model {ref!r}: {expected}; {problem}")
    return obj


def _describe(obj: Any) -> str:
    return f"class {obj.__name__}" if inspect.isclass(obj) else type(obj).__name__


def _build_signature_problem(func: Callable[..., Any]) -> str | None:
    """Why ``func`` cannot be called as ``build(hp)``, or None if it can.

    Checked here, at start-up, because keras-tuner would only call it in the first trial (after
    the data has loaded and the workers have started) and fail there with a TypeError.
    """
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return f"the signature of {_describe(func)} {func!r} cannot be read (a builtin?)"
    try:
        signature.bind(object())
    except TypeError:
        name = getattr(func, "__name__", _describe(func))
        return f"{name}({', '.join(signature.parameters)}) cannot be called with one argument (hp)"
    return None
