"""`python -m weighttui.cli ...`: the same as the `weighttui` command."""

import sys

from weighttui.cli.main import main

sys.exit(main())
