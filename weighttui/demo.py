"""`python -m weighttui.demo PATH`: the demo trainer (weighttui/cli/demo.py) under its documented name."""

import sys

from weighttui.cli.demo import main, train

__all__ = ["main", "train"]

if __name__ == "__main__":
    sys.exit(main())
