"""`python -m fnets`: the `fnets` command (fnets/main.py)."""

from fnets.main import run

run()
