"""The concrete executor: a byte-level TDX machine written independently of ``tdxcheck.model``.

``machine.py`` is the platform (memory, caches, keys) and the TDX module's leaves;
``wrappers.py`` the typed Linux SEAMCALL wrappers over it; ``runner.py`` the adapter the
replay engine drives (``Executor``).  Only ``tdxcheck.model.steps`` and
``tdxcheck.model.status`` are imported from the model.
"""

from .machine import Consequence, Machine
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
