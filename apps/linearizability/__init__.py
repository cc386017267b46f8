"""A linearizability checker with an HTML time line (the role porcupine plays for the lab).

Record, check, and draw the history when it fails::

    recorder = Recorder()
    with recorder.op(client_id, {"op": "get", "key": "k"}) as rec:
        rec.output = clerk.get("k")
    ...
    history = recorder.history()
    result = check(history, KVModel(), timeout=1.0)     # result.verdict: OK, ILLEGAL or UNKNOWN
    if result.verdict is Verdict.ILLEGAL:
        render_html(history, KVModel(), result, "history.html")

UNKNOWN means the time budget ran out; it is never reported as OK. Histories
are saved and loaded as JSON lines (``save``/``load``) and checked from the
shell with ``zactor check HISTORY --model kv --html OUT``.
"""

from apps.linearizability.checker import CheckResult, ModelError, PartitionResult, Verdict, check
from apps.linearizability.history import HistoryError, Operation, Recorder, Recording, load, save
from apps.linearizability.html import render_html
from apps.linearizability.model import MODELS, NO_REPLY, KVInput, KVModel, Model

__all__ = [
    "MODELS",
    "NO_REPLY",
    "CheckResult",
    "HistoryError",
    "KVInput",
    "KVModel",
    "Model",
    "ModelError",
    "Operation",
    "PartitionResult",
    "Recorder",
    "Recording",
    "Verdict",
    "check",
    "load",
    "render_html",
    "save",
]
