"""Test hosts: network namespaces that stand in for machines, with packet-level faults.

Everything the lab and the soak call "another machine" is otherwise one more
address on the same loopback, and every partition is a rule the transport
applies to itself. Here each host has a network stack of its own (a Linux
network namespace), linked to the others through a bridge, and faults are
nftables rules in the hosts' own namespaces: TCP connections go silent
instead of failing, exactly as on a real network.

Needs root (``ip netns``) and the ``nft`` command. Nothing is routed out of
the namespaces and nothing is added to the machine's own network stack.
"""

from apps.hosts.netns import Hosts, HostsError, Instance, available, host_keyring, instances, sweep_stale

__all__ = ["Hosts", "HostsError", "Instance", "available", "host_keyring", "instances", "sweep_stale"]
