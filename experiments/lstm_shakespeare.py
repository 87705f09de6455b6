"""Character-level LSTM language model on tiny_shakespeare (1×512 LSTM, Adam); prints and saves a sample.

  TFDS_DATA_DIR=../shared/tfds python launch.py --experiment=lstm_shakespeare --workdir=/tmp/lstm_shakespeare
  TFDS_DATA_DIR=../shared/tfds python launch.py --experiment=lstm_shakespeare:rnn --workdir=/tmp/rnn_shakespeare

Expected (2-core x86 CPU, jax 0.10.2; seed 0): validation loss 1.538 nats/char (2.219 bits/char), test 1.613
(final model, also the best checkpoint), after 2000 steps. Wall time 54m08s on a machine shared with another run
the whole time (median 5,400 characters/s); alone ~25 minutes (~11,100 characters/s).
The rnn variant (vanilla tanh RNN, same model and training otherwise): validation 1.512 nats/char (2.181 bits/char),
test 1.623, in 26m39s on the shared machine (alone ~11 minutes). At this size and with 128-character training
windows from a zero state the RNN matches the LSTM on validation (issue 15 is about a recipe that shows the
LSTM's advantage).
"""

import ml_collections

VARIANTS = {"lstm": "the default", "rnn": "vanilla tanh RNN baseline: the same model and training, the LSTM cell "
            "swapped for tanh"}


def get_config(cell: str = "lstm") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "char_lm"  # fnets/train_lm.py
  c.seed = 0
  c.dataset = "tiny_shakespeare"
  c.data_dir = ""  # empty: $TFDS_DATA_DIR, else ~/tensorflow_datasets
  c.batch_size = 64
  c.seq_len = 128
  c.num_steps = 3000
  c.max_steps = 0  # stop after this many steps when > 0 (smoke runs)
  c.dtype = "float32"  # or bfloat16: computation only; params, optimizer state and loss stay float32
  c.param_sharding = "replicated"  # or fsdp: large arrays of the train state split over the devices
  c.init_from = ""  # a run's workdir (its best checkpoint, else latest) or WORKDIR/checkpoints/STEP: start from its weights
  c.profile_steps = ""  # "A:B": a jax.profiler trace of steps A..B-1 in WORKDIR/profile (TensorBoard, Perfetto)
  c.log_every_steps = 50
  c.eval_every_steps = 250
  c.eval_streams = 64
  c.checkpoint_every_steps = 250  # and at every evaluation
  c.keep_checkpoints = 3
  c.optimizer = "adam"
  c.learning_rate = 2e-3
  c.momentum = 0.0
  c.nesterov = False
  c.weight_decay = 0.0
  c.schedule = "warmup_cosine"
  c.warmup_epochs = 100.0  # in steps here: an "epoch" of the schedule is one step
  c.grad_clip_norm = 1.0
  c.model = ml_collections.ConfigDict(dict(name="char_lm", cell=cell, embed_dim=128, hidden_size=512,
                                           num_layers=1, dropout=0.25, unroll=1, impl="fused"))
  c.sample_prompt = "ROMEO:"
  c.sample_length = 400
  c.sample_temperature = 0.8
  return c
