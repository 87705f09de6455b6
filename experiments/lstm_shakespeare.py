"""Character-level LSTM language model on tiny_shakespeare (1×512 LSTM, dropout 0.25, Adam), trained with
truncated BPTT as char-rnn does; prints and saves a sample.

  TFDS_DATA_DIR=../shared/tfds fnets --experiment=lstm_shakespeare --workdir=/tmp/lstm_shakespeare
  TFDS_DATA_DIR=../shared/tfds fnets --experiment=lstm_shakespeare:rnn --workdir=/tmp/rnn_shakespeare

Training: each of the 64 batch rows reads its own contiguous stream of the train text, 128 characters per step,
and the state is carried from one window to the next (gradients cut at the window's start); evaluation carries
the state through 64 streams of the validation text the same way (fnets/tasks/char_lm.py).

Expected (2-core x86 CPU, jax 0.10.2; seed 0, commit 8ebff50): validation 1.435 nats/char (2.070 bits/char), test
1.550 (final model, also the best checkpoint), after 3000 steps (24.6M characters, ~24 epochs); 39m53s of wall
time (~10,500 characters/s).
The rnn variant (vanilla tanh RNN, the same model, data and training otherwise): validation 1.561 nats/char
(2.252 bits/char), test 1.654 (final model, also the best checkpoint), in 14m50s: the LSTM is 0.126 nats/char better
on validation and 0.104 on test with the same 3000 steps.
Tuned on validation only: from 1.538 (random 128-character windows from a zero state, no dropout, 2000 steps),
truncated BPTT gave 1.509 and dropout 0.25 with 3000 steps 1.435.
"""

import ml_collections

from fnets.experiments import common

VARIANTS = {"lstm": "the default", "rnn": "vanilla tanh RNN baseline: the same model and training, the LSTM cell "
            "swapped for tanh"}


def get_config(cell: str = "lstm") -> ml_collections.ConfigDict:
  c = common.run("char_lm", "tiny_shakespeare")  # or any UTF-8 file of yours: text:PATH
  c.text_fractions = (0.9, 0.05, 0.05)  # text:PATH: train, validation and test as contiguous blocks
  c.batch_size = 64
  c.seq_len = 128
  c.num_steps = 3000
  c.log_every_steps = 50
  c.checkpoint_every_steps = 250  # and at every evaluation
  c.eval_every_steps = 250
  c.eval_streams = 64
  c.optimizer = "adam"
  c.learning_rate = 2e-3
  c.momentum = 0.0
  c.nesterov = False
  c.weight_decay = 0.0
  c.schedule = "warmup_cosine"
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.model = ml_collections.ConfigDict(dict(name="char_lm", cell=cell, embed_dim=128, hidden_size=512,
                                           num_layers=1, dropout=0.25, unroll=1, impl="fused"))
  c.sample_prompt = "ROMEO:"
  c.sample_length = 400
  c.sample_temperature = 0.8
  return c
