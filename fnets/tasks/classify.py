"""Image classification (`config.task = "classify"`): the building blocks of a run, and `setup(config)`, which
puts them together into the task that fnets/loop.py trains and evaluates.

Stages, in order: mesh → input (train and held-out validation; test only when the loop asks) → model →
optimizer → initial state → jitted steps. The same code runs on one device or many, in one process or many
(fnets/parallel.py).

A sweep (`config.sweep`, fnets/sweeps.py) trains its K members at once: `jax.vmap` over a leading member axis of
the train state, with each member's seed (its init, data order, augmentation and dropout) and swept values as
arrays; member k is the run of its seed and values, and evaluation reports each member.
"""

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fnets import config as config_lib
from fnets import models, optim, parallel, sweeps
from fnets.data import images as image_data
from fnets.errors import ConfigError
from fnets.models import cnn
from fnets.state import Task, TrainState, by_path

# The patch-whitening layer's statistics come from this many training images (airbench: 5,000, ~4.8M patches).
WHITENING_IMAGES = 5000


def check(config) -> None:
  """The fields this task and the modules it uses read."""
  config_lib.require(config, "positive_int", "batch_size", "eval_batch_size", "num_epochs")
  config_lib.require(config, ">=0", "warmup_epochs", "whiten_bias_epochs")
  config_lib.require(config, "[0,1)", "label_smoothing")
  for module in (image_data, models, optim, parallel):
    module.check(config)
  if config.validation_percent == 0 and sweeps.num_points(config) > 1:
    raise ConfigError("a sweep over hyperparameters chooses on the validation split, and "
                      "--config.validation_percent=0 leaves none; hold out some (e.g. 10) or sweep the seed only")


def cross_entropy(logits_BxC, labels_B, label_smoothing: float = 0.0):
  targets_BxC = optax.smooth_labels(jax.nn.one_hot(labels_B, logits_BxC.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits_BxC, targets_BxC)


def train_step(state: TrainState, images_BHWC, labels_B, key, indices_B, values, *, build, mean_C, std_C,
               steps_per_epoch: int = 1):
  """One SGD step. All randomness (augmentation, dropout) comes from `key` folded with the step number, so a
  step's result depends only on (seed, step, batch); `indices_B` (the examples' indices in the split) are needed
  by `config.alternating_flip` only, whose flips depend on (seed, example, epoch). `build(values)` gives the
  config, model and optimizer: of the run, or (`values`: a sweep member's swept fields, traced) of a member."""
  config, model, tx, lr_schedule = build(values)
  aug_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
  x_BHWC = image_data.normalize(images_BHWC, mean_C, std_C)
  if config.augment:
    flip_B = None
    if config.alternating_flip:
      example_key = jax.random.fold_in(key, jnp.iinfo(jnp.int32).max)  # (a number no step reaches)
      flip_B = image_data.alternating_flip(example_key, indices_B, state.step // steps_per_epoch)
    x_BHWC = image_data.augment(aug_key, x_BHWC, config.crop_padding, config.flip, flip_B)

  def loss_fn(params):
    logits_BxC, updates = model.apply({"params": params, "batch_stats": state.model_state}, x_BHWC, train=True,
                                      rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    loss = cross_entropy(logits_BxC, labels_B, config.label_smoothing).mean()
    return loss, (logits_BxC, updates.get("batch_stats", {}))

  (loss, (logits_BxC, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state, batch_stats)
  metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits_BxC, -1) == labels_B),
             "learning_rate": lr_schedule(state.step)}
  return new_state, metrics


def _eval_sums(logits_BxC, labels_B, mask_B):
  return {"loss": jnp.sum(cross_entropy(logits_BxC, labels_B) * mask_B),
          "correct": jnp.sum((jnp.argmax(logits_BxC, -1) == labels_B) * mask_B),
          "count": jnp.sum(mask_B)}


def eval_step(state: TrainState, images_BHWC, labels_B, mask_B, *, model, mean_C, std_C, tta: str = "none"):
  """Sums of loss and correct predictions over the unmasked examples of one batch. With test-time augmentation
  (`tta`), the logits are the weighted mean of the logits of the views."""
  x_BHWC = image_data.normalize(images_BHWC, mean_C, std_C)
  apply = lambda x: model.apply({"params": state.params, "batch_stats": state.model_state}, x, train=False)
  logits_BxC = sum(w * apply(view) for w, view in image_data.tta_views(x_BHWC, tta))
  return _eval_sums(logits_BxC, labels_B, mask_B)


def evaluate(eval_fn, state, split: image_data.ImageSplit, batch_size: int) -> dict | list[dict]:
  """Loss and accuracy over a split; a list of them, one per member, for a sweep's stacked state."""
  sums = None
  for batch in image_data.eval_batches(split, batch_size):
    out = eval_fn(state, *batch)
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  sums = parallel.to_host(sums)
  metrics = lambda s: {"loss": float(s["loss"] / s["count"]), "accuracy": float(s["correct"] / s["count"]),
                       "num_examples": int(s["count"])}
  if np.ndim(sums["count"]) == 0:
    return metrics(sums)
  return [metrics({k: v[i] for k, v in sums.items()}) for i in range(len(sums["count"]))]


def member_batch(split, config, seeds, step: int):
  """Training batch `step` (images, labels, the examples' indices); stacked for a sweep's members (`seeds`), each
  in the data order of its seed."""
  if seeds is None:
    return image_data.train_batch(split, config.batch_size, config.seed, step)
  batches = [image_data.train_batch(split, config.batch_size, int(seed), step) for seed in seeds]
  return tuple(np.stack(parts) for parts in zip(*batches))


# --- The building blocks. Each takes the config and what the earlier ones made.

def load_data(config, mesh) -> image_data.ImageDataset:
  """Train and validation in memory (the test split is read only when asked); a batch that fits neither the
  devices nor the data is a ConfigError."""
  parallel.check_divisible("batch_size", config.batch_size, mesh)
  parallel.check_divisible("eval_batch_size", config.eval_batch_size, mesh)
  data = image_data.load(config.dataset, config.data_dir or None, config.validation_percent, config.image_size)
  check_batch(config, data)
  return data


def check_batch(config, data) -> None:
  if config.batch_size > (n := len(data.train.labels_N)):
    raise ConfigError(f"--config.batch_size={config.batch_size} is larger than the {n} training examples; "
                      f"use at most {n}")


def create_model(config, data):
  """Params stay float32 under dtype=bfloat16; only the computation is bf16."""
  return models.create(config.model, num_classes=data.num_classes, dtype=models.compute_dtype(config.dtype))


def create_optimizer(config, model, data, steps_per_epoch: int):
  """(tx, lr_schedule). The schedule spans all epochs even when max_steps stops the run early (a smoke run sees
  the real rates). The patch-whitening kernel is frozen; its bias trains for whiten_bias_epochs (0: throughout)."""
  total = steps_per_epoch * config.num_epochs
  lr_schedule = optim.schedule(config, total, config.warmup_epochs * steps_per_epoch)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), data.train.images_NHWC[:1], train=False))
  param_paths = by_path(shapes["params"])
  frozen = {path: 0 for path in cnn.FROZEN_PATHS if path in param_paths}
  if (bias := f"{cnn.WHITEN}/bias") in param_paths and config.get("whiten_bias_epochs"):
    frozen[bias] = int(config.whiten_bias_epochs * steps_per_epoch)
  tx = optim.optimizer(config, lr_schedule, frozen=frozen, total_steps=total, steps_per_epoch=steps_per_epoch)
  return tx, lr_schedule


def build(config, data, steps_per_epoch: int, values: dict | None = None):
  """(config, model, tx, lr_schedule) of the run, or of a sweep member whose swept fields are `values` (arrays:
  inside the vmapped init and step they are traced, so one compilation serves every member)."""
  config = sweeps.with_values(config, values) if values else config
  model = create_model(config, data)
  return (config, model, *create_optimizer(config, model, data, steps_per_epoch))


def init_state(config, data, mesh, build_fn):
  """(state, train_key, state_sharding): one seed gives the parameters and, folded with the step, every step's
  augmentation and dropout; a sweep's state stacks its members'. A patch-whitening first layer
  (model.whiten_kernel) is set from the training images as the model sees them (normalised), the same for every
  seed."""
  whiten = {}
  if k := config.model.get("whiten_kernel", 0):
    x_NHWC = (data.train.images_NHWC[:WHITENING_IMAGES] - data.mean_C) / data.std_C
    whiten = {"kernel": jnp.asarray(cnn.patch_whitening(x_NHWC, k))}

  def init(seed, values):
    _, model, tx, _ = build_fn(values)
    init_key, train_key = jax.random.split(jax.random.key(seed))
    variables = model.init(init_key, data.train.images_NHWC[:1], train=False)
    params = variables["params"]
    if whiten:
      params = {**params, cnn.WHITEN: {**params[cnn.WHITEN], **whiten}}
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), variables.get("batch_stats", {})), train_key

  seeds, values = sweeps.member_arrays(config) if sweeps.fields(config) else (np.int32(config.seed), {})
  init, state_sharding, _ = parallel.member_init(init, seeds, values, mesh, config.param_sharding)
  state, train_key = jax.jit(init, out_shardings=(state_sharding, parallel.replicated(mesh)))(seeds, values)
  return state, train_key, state_sharding


def jit_steps(config, data, mesh, state_sharding, steps_per_epoch: int, build_fn, chunk: int | None = None):
  """(train_jit, eval_jit): everything on the hot path inside one jit, with explicit shardings; the old state's
  buffers are reused (donated). A sweep's step maps over its members (`chunk` at a time, if given).
  train_jit(state, images, labels, key, indices, values) -> (state, metrics); eval_jit(state, images, labels,
  mask) -> sums (one per member for a sweep)."""
  sweep = bool(sweeps.fields(config))
  constants = dict(mean_C=data.mean_C, std_C=data.std_C)
  step_fn = functools.partial(train_step, build=build_fn, steps_per_epoch=steps_per_epoch, **constants)
  batch_axis = parallel.member_batch_axis(mesh, len(sweeps.members(config)))
  batch, replicated = parallel.batch_sharding(mesh, batch_axis), parallel.replicated(mesh)
  train_jit = jax.jit(parallel.over_members(step_fn, (0,) * 6, chunk) if sweep else step_fn,
                      in_shardings=(state_sharding, batch, batch, replicated, batch, replicated),
                      out_shardings=(state_sharding, replicated), donate_argnums=0)
  eval_fn = functools.partial(eval_step, model=build_fn(None)[1], tta=config.tta, **constants)
  eval_batch = parallel.batch_sharding(mesh)
  # (A sweep's state as it is placed: the test split evaluates the chosen point's members only.)
  eval_jit = jax.jit(jax.vmap(eval_fn, in_axes=(0, None, None, None)) if sweep else eval_fn,
                     in_shardings=(None if sweep else state_sharding, eval_batch, eval_batch, eval_batch),
                     out_shardings=replicated)
  return train_jit, eval_jit


def setup(config: ml_collections.ConfigDict, data: image_data.ImageDataset | None = None,
          workdir: str | None = None) -> Task:
  """All a run, its evaluation or a notebook needs, from the blocks above (`.context` holds the data, the model
  and the jitted steps). `data`: arrays of your own (image_data.in_memory) instead of the config's dataset.
  (`workdir` is the char_lm task's; an image run records its classes but reads them from its data.)"""
  mesh = parallel.make_mesh()
  if data is None:
    data = load_data(config, mesh)
  else:
    check_batch(config, data)
  num_train = len(data.train.labels_N)
  steps_per_epoch = num_train // config.batch_size
  total_steps = steps_per_epoch * config.num_epochs
  if config.max_steps:
    total_steps = min(total_steps, config.max_steps)
  build_fn = functools.partial(build, config, data, steps_per_epoch)
  _, model, tx, lr_schedule = build_fn()
  state, train_key, state_sharding = init_state(config, data, mesh, build_fn)
  train_jit, eval_jit = jit_steps(config, data, mesh, state_sharding, steps_per_epoch, build_fn)

  seeds, values = sweeps.member_arrays(config) if sweeps.fields(config) else (None, {})
  batch_axis = parallel.member_batch_axis(mesh, len(sweeps.members(config)))
  batch = parallel.batch_sharding(mesh, batch_axis)
  values = jax.tree.map(lambda v: parallel.to_global(v, parallel.replicated(mesh)), values)

  def train_args(state, step):  # (the batch follows from (seed, step): a resumed run sees the same data)
    images, labels, indices = (parallel.to_global(a, batch) for a in member_batch(data.train, config, seeds, step))
    return state, images, labels, train_key, indices, values
  sweep_summary = ""
  if seeds is not None:
    rebuild = lambda chunk: jit_steps(config, data, mesh, state_sharding, steps_per_epoch, build_fn, chunk)[0]
    train_jit, chunk = parallel.fit_members(train_jit, train_args(state, 0), len(seeds), rebuild)
    sweep_summary = sweeps.placement(len(seeds), mesh.size, batch_axis == 0, chunk)

  train_fn = lambda state, step: train_jit(*train_args(state, step))

  eval_batch = parallel.batch_sharding(mesh)
  eval_fn = lambda state, *arrays: eval_jit(state, *(parallel.to_global(a, eval_batch) for a in arrays))
  splits = {"validation": data.validation}

  def evaluate_split(state, split: str) -> dict:
    if split == "test" and "test" not in splits:
      splits["test"] = data.read_test()
    if splits[split] is None:  # (data of your own without a test split)
      return None
    return evaluate(eval_fn, state, splits[split], config.eval_batch_size)

  held_out = f"{len(data.validation.labels_N):,} validation" if data.validation else "no validation"
  return Task(
      state=state, train_step=train_fn, evaluate=evaluate_split, total_steps=total_steps,
      eval_every_steps=steps_per_epoch if data.validation else 0, best_metric="accuracy", best_mode="max",
      items_per_step=config.batch_size, rate_name="examples_per_sec", steps_per_epoch=steps_per_epoch,
      summary=f"{data.name}: {num_train:,} train / {held_out} examples, {steps_per_epoch} steps an epoch"
              f"{sweep_summary}",
      members=sweeps.members(config),
      record={"data": {"num_classes": data.num_classes, "image_shape": list(data.train.images_NHWC.shape[1:]),
                       "train_examples": num_train, **({"classes": list(data.classes)} if data.classes else {})}},
      files={"classes.json": json.dumps({"classes": list(data.classes)})} if data.classes else {},
      context=dict(data=data, model=model, mesh=mesh, tx=tx, lr_schedule=lr_schedule, train_jit=train_jit,
                   eval_jit=eval_jit, train_key=train_key, train_args=train_args))
