"""``python -m apps.linearizability HISTORY_FILE ...``: the same as ``zactor check``."""

import sys

from apps.linearizability.cli import main

sys.exit(main())
