"""The lab's MapReduce applications, each a module with ``map`` and ``reduce``."""

BUILTIN = ("wc", "wordcount", "indexer", "mtiming", "rtiming", "jobcount", "early_exit", "crash", "nocrash")
