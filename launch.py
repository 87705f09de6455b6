"""Runs an experiment from a checkout: the same as the `fnets` command (fnets/main.py), e.g.

  python launch.py --experiment=cnn_cifar
  python launch.py --list
"""

from fnets.main import run

if __name__ == "__main__":
  run()
