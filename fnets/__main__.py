"""`python -m fnets`: the `fnets` command (fnets/main.py)."""

from fnets.main import run

if __name__ == "__main__":
  run()
