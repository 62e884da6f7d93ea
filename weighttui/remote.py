"""Public import path `weighttui.remote`: the module itself lives at `weighttui.data.remote`.

Aliased in sys.modules (not re-exported) so that both names are one module object.
"""

import sys

from weighttui.data.remote import __name__ as _real_name

sys.modules[__name__] = sys.modules[_real_name]
