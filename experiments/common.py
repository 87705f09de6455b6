"""Fields the experiments share; experiment files (and your own, anywhere: `from fnets.experiments import common`)
start from these and change what differs."""

import ml_collections


def optimizer(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The optimizer's fields (fnets/optim.py), all recorded in config.json: SGD with Nesterov momentum and
  one-cycle by default. The tasks add how long warmup lasts (warmup_epochs, warmup_steps); image classification
  adds lookahead (its start counted in epochs)."""
  c.optimizer = "sgd"  # sgd | adam | adamw
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 5e-4
  c.schedule = "onecycle"  # constant | cosine | warmup_cosine | onecycle
  c.lr_start_fraction = 0.1  # warmup starts at this fraction of the peak rate
  c.lr_end_fraction = 0.0  # decaying schedules end at this fraction of it
  c.grad_clip_norm = 0.0  # 0: no clipping
  c.bias_lr_scale = 1.0  # learning-rate multiplier of the BN parameters (their weight decay stays)
  c.decay_biases = False  # weight decay on biases and BN parameters too (else kernels only)
  return c


def run(task: str, dataset: str) -> ml_collections.ConfigDict:
  """The fields of every run: what it trains on, how long, where its numbers come from, what it writes."""
  c = ml_collections.ConfigDict()
  c.task = task  # fnets/tasks/TASK.py
  c.seed = 0  # parameters, data order, dropout and augmentation
  c.dataset = dataset
  c.data_dir = ""  # empty: $TFDS_DATA_DIR, else ~/tensorflow_datasets
  c.batch_size = 128
  c.max_steps = 0  # stop after this many steps when > 0 (smoke runs)
  c.dtype = "float32"  # or bfloat16: computation only; params, optimizer state and loss stay float32
  c.param_sharding = "replicated"  # or fsdp: large arrays of the train state split over the devices
  c.init_from = ""  # a run's workdir (its best checkpoint, else latest) or WORKDIR/checkpoints/STEP: start from its weights
  c.profile_steps = ""  # "A:B": a jax.profiler trace of steps A..B-1 in WORKDIR/profile (TensorBoard, Perfetto)
  c.log_every_steps = 100
  c.checkpoint_every_steps = 500  # and at every evaluation
  c.keep_checkpoints = 3
  # Fields → tuples of values, trained together as one program (fnets/sweeps.py): sweep.seed=(0,1,2), ...
  c.sweep = ml_collections.ConfigDict()
  return optimizer(c)


def image_classification() -> ml_collections.ConfigDict:
  c = run("classify", "mnist")  # a TFDS name, or your own images: folder:PATH or npz:PATH (fnets/data/)
  c.image_size = 0  # folder: datasets only: resize every image to image_size × image_size (0: keep their size)
  # The last validation_percent % of TFDS's train split is held out: evaluated after every epoch, it picks the
  # best checkpoint. The test split is read once, at the end. 0: train on all of it, no evaluation until the end.
  c.validation_percent = 10
  c.eval_batch_size = 1000
  c.num_epochs = 10
  # Augmentation (random crop from a reflect-padded image, horizontal flip), inside the jitted step.
  c.augment = False
  c.crop_padding = 4  # translation by up to ±crop_padding pixels
  c.flip = True
  c.alternating_flip = False  # flip example i in epoch e iff coin(seed, i) xor (e odd) (airbench), not at random
  c.tta = "none"  # test-time augmentation of evaluation: none | flip | flip_translate (fnets/data/images.py)
  c.warmup_epochs = 1.0
  # Lookahead-EMA (fnets/optim.py): every lookahead_every steps from lookahead_start_epochs on (0: off), the
  # weights are pulled back to their running average, ρ = lookahead_decay^every · (step / steps)^power.
  c.lookahead_every = 0
  c.lookahead_start_epochs = 0.0
  c.lookahead_decay = 0.95
  c.lookahead_decay_power = 3.0
  c.whiten_bias_epochs = 0.0  # > 0: a patch-whitening layer's bias (model.whiten_kernel) is frozen after these
  c.label_smoothing = 0.0
  return c
