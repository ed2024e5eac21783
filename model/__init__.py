"""The TDX host/module rules as one executable model.

Start reading at ``mng.py::tdh_mng_key_freeid``; ``rule.py`` says what a rule is,
``state.py`` what the state is, ``checks.py`` the helpers every leaf shares.
"""

from . import host, mem, mng, phymem, vp  # noqa: F401  (registers every leaf)
from .rule import LEAVES

__all__ = ["LEAVES"]
