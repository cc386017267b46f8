"""The live view's figures as Prometheus metrics, served on a loopback HTTP port.

Why prometheus_client: its exposition format, HTTP server and collector
protocol are what every scraper expects, and it is small and pure Python.
Each scrape takes a fresh look (a custom collector), so nothing is
computed between scrapes and the nodes are asked only when someone asks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from apps.top.sample import Sampler

_REFUSALS = ("rejected", "malformed", "unknown_actor", "dropped_full", "refused", "revoked", "cut_off")
"""The node counters that ``zactor_node_refused`` adds up: every frame (or handshake) a node would not take."""


def _need() -> Any:
    try:
        import prometheus_client  # noqa: F401  (optional: the `top` extra)
        from prometheus_client import core
    except ImportError as exc:
        raise SystemExit("zactor top --metrics-port needs prometheus_client: pip install 'zactor[top]'") from exc
    return core


class NodesCollector:
    """A prometheus_client collector: one look at the nodes per scrape."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Any]:
        core = _need()
        up = core.GaugeMetricFamily("zactor_node_up", "1 if the node answered this scrape", labels=["node"])
        handled = core.CounterMetricFamily("zactor_actor_handled", "messages an actor has handled", labels=["node", "actor"])
        mailbox = core.GaugeMetricFamily("zactor_actor_mailbox", "messages waiting in an actor's mailbox", labels=["node", "actor"])
        p99 = core.GaugeMetricFamily("zactor_actor_handling_p99_seconds", "p99 of an actor's recent handling times",
                                     labels=["node", "actor"])
        restarts = core.CounterMetricFamily("zactor_actor_restarts", "times an actor was rebuilt after a failure",
                                            labels=["node", "actor"])
        received = core.CounterMetricFamily("zactor_node_received_messages", "messages a node has received", labels=["node"])
        refused = core.CounterMetricFamily("zactor_node_refused", "frames a node refused (unauthenticated, malformed, "
                                           "unknown actor, full queue, a client key's code, a revoked key's, a "
                                           "connection that does not read its replies)", labels=["node"])
        term = core.GaugeMetricFamily("zactor_raft_term", "a Raft peer's current term", labels=["node"])
        leader = core.GaugeMetricFamily("zactor_raft_is_leader", "1 if the Raft peer leads", labels=["node"])
        commit = core.GaugeMetricFamily("zactor_raft_commit_index", "a Raft peer's commit index", labels=["node"])
        applied = core.GaugeMetricFamily("zactor_raft_applied_index", "a Raft peer's last applied index", labels=["node"])
        for look in self.sampler.look():
            ep = look.endpoint
            up.add_metric([ep], 0 if look.stats is None else 1)
            if look.stats is None:
                continue
            counters = look.stats["counters"]
            received.add_metric([ep], counters["received"])
            refused.add_metric([ep], sum(counters.get(name, 0) for name in _REFUSALS))
            for a in look.stats["actors"]:
                labels = [ep, a["name"]]
                if a["handled"] is not None:
                    handled.add_metric(labels, a["handled"])
                if a["mailbox"] is not None:
                    mailbox.add_metric(labels, a["mailbox"])
                if a["p99_ms"] is not None:
                    p99.add_metric(labels, a["p99_ms"] / 1000)
                restarts.add_metric(labels, a["restarts"])
            if look.raft is not None:
                term.add_metric([ep], look.raft.term)
                leader.add_metric([ep], 1 if look.raft.role == "leader" else 0)
                commit.add_metric([ep], look.raft.commit_index)
                applied.add_metric([ep], look.raft.applied_index)
        yield from (up, received, refused, handled, mailbox, p99, restarts, term, leader, commit, applied)


def serve_metrics(sampler: Sampler, port: int) -> None:
    """Serve ``/metrics`` on 127.0.0.1:``port`` from a daemon thread (loopback only: the figures name the cluster's endpoints)."""
    _need()
    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(NodesCollector(sampler))
    start_http_server(port, addr="127.0.0.1")
