"""`python -m weighttui ...`: the same as the `weighttui` command (and `python -m weighttui.cli`)."""

import sys

from weighttui.cli.main import main

sys.exit(main())
