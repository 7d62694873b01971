"""``python -m localist_core``: see localist_core.cli."""
import sys

from .cli import main

sys.exit(main())
