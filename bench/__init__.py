"""Herald's benchmark harness: ``python -m bench`` (see ``bench/run.py``).

Benchmarks, not tests: nothing here is collected by pytest.
"""
