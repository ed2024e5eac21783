"""Named invariants with stable ids (scenario-format.md §4, tdx-reference.md §11)."""

from . import invariants as _invariants  # noqa: F401  (registers every invariant)
from .base import REGISTRY, Clause, Invariant

#: every invariant, in a fixed order (ids are stable; the order is the report order)
INVARIANTS: tuple[Invariant, ...] = tuple(REGISTRY.values())

__all__ = ["INVARIANTS", "REGISTRY", "Clause", "Invariant"]
