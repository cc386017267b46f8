"""A MapReduce application and how to find one: a built-in name, a module, a .py file, or functions."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from apps.mapreduce.apps import BUILTIN


class AppError(ValueError):
    """An application that cannot be loaded or lacks ``map``/``reduce``."""


@dataclass(frozen=True)
class App:
    """The user's functions. ``combine`` pre-reduces a key's values in the mapper; it may run any
    number of times on any part of them and on its own output (spills, merges, folding copies of one
    value), so it must be pure and accept what it returns, like a sum and unlike a count."""

    name: str
    map: Callable[[str, str], Any]
    reduce: Callable[[str, list[str]], str]
    combine: Callable[[str, list[str]], list[str]] | None = None


def _from_object(name: str, obj: Any) -> App:
    fns = {}
    for attr in ("map", "reduce"):
        fn = getattr(obj, attr, None)
        if fn is None:
            raise AppError(f"application {name} has no {attr}(...) function")
        if not callable(fn):
            raise AppError(f"application {name}: {attr} is not callable")
        fns[attr] = fn
    combine = getattr(obj, "combine", None)
    if combine is not None and not callable(combine):
        raise AppError(f"application {name}: combine is not callable")
    return App(name, fns["map"], fns["reduce"], combine)


def _from_file(path: Path) -> App:
    if not path.is_file():
        raise AppError(f"application file not found: {path}")
    module_name = f"zactor_user_app_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise AppError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise AppError(f"loading {path} failed: {exc!r}") from exc
    # Not importable by name elsewhere: ship its functions by value.
    cloudpickle.register_pickle_by_value(module)
    return _from_object(str(path), module)


def load_app(spec: Any) -> App:
    """An App from a built-in name, ``package.module``, a ``.py`` path, an object, or (map, reduce[, combine])."""
    if isinstance(spec, App):
        return spec
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3) or not all(callable(f) for f in spec):
            raise AppError("an application given as a tuple must be (map, reduce) or (map, reduce, combine) functions")
        return App(getattr(spec[0], "__module__", "functions"), *spec)
    if isinstance(spec, (str, Path)):
        text = str(spec)
        if text.endswith(".py") or "/" in text:
            return _from_file(Path(text))
        module_name = f"apps.mapreduce.apps.{text}" if text in BUILTIN else text
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise AppError(
                f"no application {text!r}: not a built-in ({', '.join(BUILTIN)}), an importable module, or a .py file ({exc})"
            ) from exc
        return _from_object(text, module)
    return _from_object(getattr(spec, "__name__", type(spec).__name__), spec)
