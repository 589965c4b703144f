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
    if isinstance(obj, keras_tuner.HyperModel) or (callable(obj) and not inspect.isclass(obj)):
        return obj
    raise ModelError(
        f"model {ref!r}: expected a keras_tuner.HyperModel subclass or instance, "
        f"or a build(hp) function; got {type(obj).__name__}"
    )
