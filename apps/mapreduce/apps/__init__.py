"""The lab's MapReduce applications, each a module with ``map`` and ``reduce``."""

BUILTIN = ("wc", "indexer", "mtiming", "rtiming", "jobcount", "early_exit", "crash", "nocrash")
