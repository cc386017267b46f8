"""An actor class on its way to another process: by import path, or by value (cloudpickle).

:class:`ClassRef` names the class by ``module:qualname`` when that import
finds this very class (not one from ``__main__``, not one made inside a
function), and carries a cloudpickle of the class itself when it cannot, or
as a fall-back for a node that cannot import it. ``spawn_process`` sends
one to its child process or to a node agent, which loads it there.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from typing import Any

import cloudpickle
import pykka

from transport.message import message

log = logging.getLogger(__name__)

_by_value_lock = threading.Lock()


@message
class ClassRef:
    """An actor class as it travels to another process: ``module:qualname``, a cloudpickle, or both."""

    path: str | None
    blob: bytes | None = None

    @classmethod
    def of(cls, actor_class: type, *, with_blob: bool = False) -> ClassRef:
        """The class by import path when that finds this very class; by value when it does not.

        ``with_blob`` adds the by-value copy also to an importable class, for a
        node whose environment may lack the module.
        """
        if not (isinstance(actor_class, type) and issubclass(actor_class, pykka.Actor)):
            raise TypeError(f"spawn_process needs a pykka.Actor subclass, got {actor_class!r}")
        path = _import_path(actor_class)
        blob = None
        if path is None or with_blob:
            blob = _pickle_by_value(actor_class, path is not None)
        return cls(path, blob)

    @property
    def describe(self) -> str:
        return self.path or "a class sent by value"

    def load(self) -> tuple[type, str]:
        """The class and how it was found (``"import"`` or ``"cloudpickle"``)."""
        if self.path is not None:
            module, _, qualname = self.path.partition(":")
            try:
                obj: Any = importlib.import_module(module)
                for part in qualname.split("."):
                    obj = getattr(obj, part)
                return obj, "import"
            except (ImportError, AttributeError) as exc:
                if self.blob is None:
                    raise ImportError(f"cannot import actor class {self.path} here ({exc}) and it was not sent by value") from exc
                log.info("actor class %s is not importable here (%s); using the copy sent by value", self.path, exc)
        if self.blob is None:
            raise ValueError("a ClassRef needs an import path or a pickled class")
        actor_class = cloudpickle.loads(self.blob)
        if not (isinstance(actor_class, type) and issubclass(actor_class, pykka.Actor)):
            raise TypeError(f"the class sent by value is not a pykka.Actor subclass: {actor_class!r}")
        return actor_class, "cloudpickle"


def _import_path(actor_class: type) -> str | None:
    module, qualname = actor_class.__module__, actor_class.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        return None
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if obj is actor_class else None


def _pickle_by_value(actor_class: type, importable: bool) -> bytes:
    module = sys.modules.get(actor_class.__module__)
    if not importable or module is None or module.__name__ == "__main__":
        return cloudpickle.dumps(actor_class)  # cloudpickle sends these by value on its own
    with _by_value_lock:  # a process-wide cloudpickle setting: set and unset it around this one dump
        cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps(actor_class)
        finally:
            cloudpickle.unregister_pickle_by_value(module)
