"""``python -m localist_core``: the command line of localist_core.cli (installed: ``localist``)."""
import sys

from .cli import main

sys.exit(main(prog="python -m localist_core"))
