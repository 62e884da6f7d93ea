"""Where weighttui keeps files of its own: the user's cache directory (indexes, remote mirrors,
imports of watched checkpoint folders). One rule for every reader and command."""

from __future__ import annotations

import os


def user_cache_dir(*parts: str) -> str:
    """$XDG_CACHE_HOME/weighttui/<parts>, or ~/.cache/weighttui/<parts>. A relative XDG_CACHE_HOME is
    ignored, as the XDG base directory specification says (it would put the files under whatever
    directory a command runs in)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "weighttui", *parts)
