"""The concrete executor: a byte-level TDX machine written independently of ``tdxcheck.model``.

``platform.py`` is the hardware (memory, caches, keys), ``structures.py`` the module's
structures, ``mng.py``/``vp.py``/``phymem.py``/``mem.py`` its leaves, ``machine.py`` the two
together; ``wrappers.py`` the typed Linux wrappers; ``runner.py`` the replay adapter.
Imports only ``tdxcheck.model.steps`` and ``tdxcheck.model.status``.
"""

from .machine import Machine
from .platform import Consequence
from .runner import ExecStep, Executor, StepNotEnabled
from .wrappers import Page, TdxHost, TdxTd, TdxVp, seamcall, tdx_td, tdx_vp

__all__ = [
    "Consequence",
    "ExecStep",
    "Executor",
    "Machine",
    "Page",
    "StepNotEnabled",
    "TdxHost",
    "TdxTd",
    "TdxVp",
    "seamcall",
    "tdx_td",
    "tdx_vp",
]
