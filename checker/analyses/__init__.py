"""Questions answered by running the engines many times: ``mutants.py`` (seeded KVM bugs),
``ablation.py`` (one module check removed at a time), ``coverage.py`` (wrappers x statuses),
``conform.py`` (random walks on model and executor, shrunk disagreements).
May import ``explore/``, ``kvm/``, ``prove/``, ``executor/``, ``scenario.py``, ``model/``.
"""
