"""Proofs with Z3: the Z3 reading of the rule data (``encode.py``), induction over every
invariant and lemma for ``--host any`` (``induction.py`` with ``common.py``, ``cti.py``,
``bmc.py``), and bounded model checking of a scenario's threads to its full length
(``scenario_bmc.py``); and ``param/``, the parametric reading (every size at once:
``prove --parametric``).  Imports ``explore/`` and ``model/``, ``properties/``; never
``analyses/`` or ``output/`` (``output/prove_report.py`` formats what these return).
"""

from __future__ import annotations

from .common import (
    BMC,
    INDUCTION,
    NO_VIOLATION,
    NOT_INDUCTIVE,
    PROVED,
    TYPING,
    UNKNOWN,
    VIOLATED,
    ProveResult,
)
from .induction import prove, write_traces
from .scenario_bmc import ScenarioProveResult, prove_scenario, write_scenario_traces

__all__ = ["BMC", "INDUCTION", "NOT_INDUCTIVE", "NO_VIOLATION", "PROVED", "TYPING", "UNKNOWN",
           "VIOLATED", "ProveResult", "ScenarioProveResult", "prove", "prove_scenario",
           "write_scenario_traces", "write_traces"]
