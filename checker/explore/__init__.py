"""The explicit-state engines: ``engine.py`` (one step of the model, compiled), ``bfs.py``
(breadth-first exploration), ``symmetry.py``, ``programs.py`` (the any host and scenario
threads), ``check.py`` (``tdxcheck check``), ``replay.py`` (one scenario, model and
executor in lockstep), ``traces.py`` (counterexamples as ``.tdx`` and ITF).
May import ``executor/``, ``scenario.py``, ``model/``, ``properties/``; nothing above.
"""
