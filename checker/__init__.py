"""The checker: everything that reads the rules in ``model/`` and answers questions with them.

``cli.py`` (the ``tdxcheck`` command) and ``scenario.py`` (the ``.tdx`` parser) sit here;
the rest is in folders by role, and imports only point down the list:
``output/`` -> ``analyses/`` -> ``kvm/``, ``prove/`` -> ``explore/`` -> ``executor/`` ->
``scenario.py`` -> ``model/``, ``properties/`` (``tests/test_layout.py`` checks it).
"""
