"""A linearizability checker with a visual history (the role porcupine plays for the lab).

    result = check(history, KVModel(), timeout=1.0)      # Verdict.OK / ILLEGAL / UNKNOWN
    render_html(history, KVModel(), result, "history.html")
"""

from apps.linearizability.checker import CheckResult, PartitionResult, Verdict, check
from apps.linearizability.history import HistoryError, Operation, Recorder, load, save
from apps.linearizability.html import render_html
from apps.linearizability.model import MODELS, UNKNOWN, KVModel, Model

__all__ = [
    "MODELS",
    "UNKNOWN",
    "CheckResult",
    "HistoryError",
    "KVModel",
    "Model",
    "Operation",
    "PartitionResult",
    "Recorder",
    "Verdict",
    "check",
    "load",
    "render_html",
    "save",
]
