"""Benchmarks and model builders of respect-pass, run from the repository root as ``python -m tools.<name>``.

They import the installed packages (``pip install -e .``, ``make demo``/``make test``) like any user code;
:mod:`tools.common` holds the helpers they share.
"""
