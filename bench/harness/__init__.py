"""The benchmark harness behind bench/run.py (see its docstring)."""
