"""Benchmarks of copilot-jupyter (issue 7): run ``python -m bench`` (``--quick`` for a smoke run).

See ``bench/README.md`` for what each row measures.
"""
