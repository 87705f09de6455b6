"""Vanilla-RNN baseline of lstm_shakespeare: the same model and training with the LSTM cell swapped for tanh.

  TFDS_DATA_DIR=../shared/tfds python launch.py --experiment=rnn_shakespeare --workdir=/tmp/rnn_shakespeare

Expected (2-core x86 CPU, jax 0.10.2): RESULT_PENDING
"""

from experiments import lstm_shakespeare

TRAINER = "fnets.train_lm"


def get_config():
  return lstm_shakespeare.get_config(cell="rnn")
