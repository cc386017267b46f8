import sys

from apps.linearizability.cli import main

sys.exit(main())
