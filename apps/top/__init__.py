"""``zactor top``: a live view of running nodes (actors, mailboxes, rates, Raft roles), and the same as Prometheus metrics."""
