"""Fields every image-classification experiment has; experiment files start from these and change what differs."""

import ml_collections


def image_classification() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "classify"  # fnets/train.py
  c.seed = 0
  c.dataset = "mnist"
  c.data_dir = ""  # empty: $TFDS_DATA_DIR, else ~/tensorflow_datasets
  # The last validation_percent % of TFDS's train split is held out: evaluated after every epoch, it picks the
  # best checkpoint. The test split is read once, at the end. 0: train on all of it, no evaluation until the end.
  c.validation_percent = 10
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.num_epochs = 10
  c.max_steps = 0  # stop after this many steps when > 0 (smoke runs)
  c.dtype = "float32"  # or bfloat16: computation only; params, optimizer state and loss stay float32
  c.param_sharding = "replicated"  # or fsdp: large arrays of the train state split over the devices
  c.ensemble_size = 1  # K > 1: train the runs of seeds seed..seed+K-1 at once (vmap), report the ensemble
  c.init_from = ""  # a run's workdir (its best checkpoint, else latest) or WORKDIR/checkpoints/STEP: start from its weights
  c.profile_steps = ""  # "A:B": a jax.profiler trace of steps A..B-1 in WORKDIR/profile (TensorBoard, Perfetto)
  c.log_every_steps = 100
  c.checkpoint_every_steps = 500  # and at the end of every epoch
  c.keep_checkpoints = 3
  # Augmentation (random crop from a reflect-padded image, horizontal flip), inside the jitted step.
  c.augment = False
  c.crop_padding = 4
  c.flip = True
  # Optimizer.
  c.optimizer = "sgd"  # sgd | adam | adamw
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.nesterov = True
  c.weight_decay = 5e-4
  c.schedule = "onecycle"  # constant | cosine | warmup_cosine | onecycle
  c.warmup_epochs = 1.0
  c.grad_clip_norm = 0.0  # 0: no clipping
  c.label_smoothing = 0.0
  return c
