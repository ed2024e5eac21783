"""The API lab (``tdxcheck apis``): what each SEAMCALL wrapper API lets a host get wrong.

``variants.py`` (the APIs as feature switches), ``host.py`` (``ApiHost``: an API's most
general client), ``classes.py`` (the thirteen classes of host mistake as step predicates),
``run.py`` (exploration and the verdict per class), ``credit.py`` (features turned off one
at a time; KVM and its mutants written against an API).
"""

from .classes import CLASSES, MisuseClass, misuse_class
from .host import ApiHost
from .run import ApisResult, Cell, VariantRun, explore_variant, run_apis
from .variants import FEATURES, VARIANTS, Variant, variant

__all__ = ["CLASSES", "FEATURES", "VARIANTS", "ApiHost", "ApisResult", "Cell", "MisuseClass",
           "Variant", "VariantRun", "explore_variant", "misuse_class", "run_apis", "variant"]
