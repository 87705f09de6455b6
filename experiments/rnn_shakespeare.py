"""Vanilla-RNN baseline of lstm_shakespeare: the same model and training with the LSTM cell swapped for tanh.

  TFDS_DATA_DIR=../shared/tfds python launch.py --experiment=rnn_shakespeare --workdir=/tmp/rnn_shakespeare

Expected (2-core x86 CPU, jax 0.10.2): validation loss 1.512 nats/char (2.181 bits/char), test 1.622, after 2000
steps in 10m44s of wall time (~28,000 characters/s). At this size and 128-character windows the tanh RNN
matches the LSTM (1.540): its vanishing gradients cost little when the context that matters is short.
"""

from experiments import lstm_shakespeare

TRAINER = "fnets.train_lm"


def get_config():
  return lstm_shakespeare.get_config(cell="rnn")
