"""What people and tools read: ``report.py`` (replay and check as text/JSON),
``prove_report.py``, ``kvm_report.py``, ``graphs.py`` (state machines, projections),
``html_report.py`` with ``report_rows.py`` (the one-page HTML report).
Formats what the engines and analyses return; may import any of them, never ``cli.py``.
"""
