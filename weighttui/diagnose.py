"""Public import path `weighttui.diagnose`: the module itself lives at `weighttui.analysis.diagnose`.

Aliased in sys.modules (not re-exported) so that both names are one module object.
"""

import sys

from weighttui.analysis.diagnose import __name__ as _real_name

sys.modules[__name__] = sys.modules[_real_name]
