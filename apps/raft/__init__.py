"""Raft (lab 3): the protocol as a pure state machine (core), a deterministic simulator (sim),
and the peer actor and cluster harness that run it on real processes."""
