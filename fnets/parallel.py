"""Devices and hosts: the mesh, where each array lives on it, and JAX's multi-controller runtime.

One code path for 1 CPU, 8 GPUs or a TPU pod. The mesh has one axis, "data", over every device of every
process. The global batch is split along it; the train state is replicated, or, with `param_sharding="fsdp"`,
each large array of it is split along one of its axes over the same devices (XLA gathers it where a step needs
it). The jitted steps take these as explicit input/output shardings and XLA inserts the collectives: the loss
is the mean over the global batch, so gradients, metrics and results are those of one device with the whole
batch (up to the order of floating-point sums).

Multi-host: every process runs the same command. `initialize` joins them through `jax.distributed` (flags, or
what JAX detects on TPU pods and SLURM); each process builds the same global batch indices from (seed, step)
and transfers to its own devices only their rows; all processes save checkpoints together (Orbax), only
process 0 writes logs and files.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fnets import config as config_lib
from fnets.errors import ConfigError

DATA = "data"
PARAM_SHARDINGS = ("replicated", "fsdp")
FSDP_MIN_SIZE = 2**14  # arrays smaller than this stay replicated under fsdp: splitting them saves nothing


def check(config) -> None:
  config_lib.one_of(config, "param_sharding", PARAM_SHARDINGS)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> None:
  """Joins a multi-process run: with a coordinator address (host:port of process 0), or `auto` where JAX finds
  the settings itself (TPU pods, SLURM, ...). Must run before JAX uses any device; a no-op otherwise."""
  if num_processes is not None and num_processes < 1:
    raise ConfigError(f"--num_processes={num_processes}: give the number of processes of the run, at least 1")
  if process_id is not None and (process_id < 0 or (num_processes and process_id >= num_processes)):
    raise ConfigError(f"--process_id={process_id}: give this process's index, from 0 to --num_processes - 1")
  if coordinator_address is not None:
    host, _, port = coordinator_address.rpartition(":")
    if not (host and port.isdigit() and 0 < int(port) < 65536):
      raise ConfigError(f"--coordinator_address={coordinator_address}: write HOST:PORT of process 0, e.g. "
                        f"10.0.0.1:1234")
  if coordinator_address or auto:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
      # Under jax 0.12.1 a step with cross-process CPU collectives loaded from the persistent compilation cache
      # hangs in its first collective (docs/design.md, "Many devices and processes"): compile it instead.
      jax.config.update("jax_enable_compilation_cache", False)


def is_primary() -> bool:
  """Process 0 writes logs, metrics and files; all processes compute and save checkpoints."""
  return jax.process_index() == 0


def make_mesh() -> jax.sharding.Mesh:
  # Auto axes: jit propagates shardings from the explicit ones given to it (jax.make_mesh defaults to Explicit).
  return jax.make_mesh((jax.device_count(),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh, batch_axis: int = 0) -> NamedSharding:
  """Split along `batch_axis` over the devices (1 to split a sweep's (member, batch, ...) arrays by batch)."""
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA))


def check_divisible(name: str, size: int, mesh) -> None:
  n = mesh.size
  if size % n:
    lower, upper = size // n * n, (size // n + 1) * n
    raise ConfigError(f"--config.{name}={size} cannot be split over {n} devices (the global batch is divided "
                      f"equally among them); use a multiple of {n}, e.g. --config.{name}={lower or upper} or {upper}")


def state_shardings(mesh, state, mode: str):
  """Shardings for every array of a train state: all replicated, or under "fsdp" each array of at least
  FSDP_MIN_SIZE elements split along its largest axis that the device count divides (the same rule places
  params and their optimizer moments alike)."""
  def leaf(x):
    shape = np.shape(x)
    if mode == "fsdp" and int(np.prod(shape)) >= FSDP_MIN_SIZE:
      for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % mesh.size == 0:
          return NamedSharding(mesh, P(*([None] * axis), DATA))
    return replicated(mesh)

  return jax.tree.map(leaf, state)


def to_global(x_host: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array holding the whole global value (the same on every process) as a global jax.Array: each
  process copies to its devices only the slices they hold."""
  return jax.make_array_from_callback(x_host.shape, sharding, lambda index: x_host[index])


def to_host(tree):
  """NumPy copies of (replicated or sharded) global arrays, on every process."""
  def leaf(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))
  return jax.tree.map(leaf, tree)


def sync(name: str) -> None:
  """Waits until every process reaches this point (a no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


# --- A sweep's members (fnets/sweeps.py): spread over the devices, trained in chunks that fit in memory.

def members_over_devices(mesh, num_members: int) -> bool:
  """Whether a sweep's member axis is split over the devices (and hosts): when their count divides it. Each
  device then trains whole members, with no collective in the step but the metrics'; otherwise every member's
  batch is split, as a single run's."""
  return num_members % mesh.size == 0


def member_batch_axis(mesh, num_members: int) -> int:
  """The axis of a step's batches split over the devices: a sweep's (member, batch, ...) arrays are split by
  member when the devices divide the members, else by batch (1); a single run's (num_members 0) by batch (0)."""
  return 1 if num_members and not members_over_devices(mesh, num_members) else 0


def member_shardings(mesh, state):
  """Every array of a sweep's stacked state split along its member axis."""
  return jax.tree.map(lambda _: NamedSharding(mesh, P(DATA)), state)


def member_init(init, seeds, values, mesh, mode: str):
  """(init, the shardings of the state it makes, whether members are split over the devices) for a run (`seeds` a
  scalar) or a sweep (`init` vmapped over `seeds` and `values`): a sweep's member axis is split over the devices
  when they divide it, else the state is placed as a run's (`state_shardings`)."""
  sweep = np.ndim(seeds) > 0
  init = jax.vmap(init) if sweep else init
  shapes = jax.eval_shape(init, seeds, values)[0]
  if sweep and members_over_devices(mesh, len(seeds)):
    return init, member_shardings(mesh, shapes), True
  return init, state_shardings(mesh, shapes, mode), False


def over_members(fn, in_axes: tuple, chunk: int | None = None):
  """`fn(state, *args) -> (state, aux)` mapped over the leading member axis of the arguments whose `in_axes`
  entry is 0 (None: shared by all). All at once (`jax.vmap`), or `chunk` members at a time (it divides their
  count): a loop inside the same program that writes each chunk's new state into the stacked state in place, so
  the memory for activations is one chunk's and the state is not copied."""
  batched = jax.vmap(fn, in_axes=in_axes)
  if chunk is None:
    return batched

  def looped(state, *args):
    num_members = jax.tree.leaves(state)[0].shape[0]
    axes = in_axes[1:]
    part = lambda tree, i: jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk), tree)
    chunk_args = lambda i: [a if axis is None else part(a, i) for a, axis in zip(args, axes)]
    aux_shapes = jax.eval_shape(batched, part(state, 0), *chunk_args(0))[1]
    aux = jax.tree.map(lambda s: jnp.zeros((num_members, *s.shape[1:]), s.dtype), aux_shapes)

    def body(i, carry):
      state, aux = carry
      new_state, new_aux = batched(part(state, i), *chunk_args(i))
      put = lambda full, x: jax.lax.dynamic_update_slice_in_dim(full, x, i * chunk, 0)
      return jax.tree.map(put, state, new_state), jax.tree.map(put, aux, new_aux)
    return jax.lax.fori_loop(0, num_members // chunk, body, (state, aux))
  return looped


def memory_budget() -> int:
  """Bytes one device may use: its limit on an accelerator; on the CPU, the host's available memory shared by
  its devices. A fifth is kept back (XLA's own buffers, the host's copies of the data)."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    total = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
  else:
    with open("/proc/meminfo") as f:
      available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    total = available // jax.local_device_count()
  return int(0.8 * total)


def cpu_cache_bytes() -> int | None:
  """The last-level cache of the first CPU (Linux), or None."""
  path = "/sys/devices/system/cpu/cpu0/cache/index3/size"
  try:
    with open(path) as f:
      size = f.read().strip()
    return int(size[:-1]) * {"K": 2**10, "M": 2**20}[size[-1]]
  except (OSError, ValueError, KeyError):
    return None


def members_per_chunk(train_jit, args, num_members: int, budget: int | None = None,
                      cache: int | None = None) -> int:
  """How many of a sweep's members one step trains at once: all of them if the compiled step's memory (XLA's
  analysis of `train_jit` on `args`: arguments, outputs and temporaries) fits `budget` (memory_budget()), else as
  many as leave room for every member's state; a ConfigError if even one at a time does not fit.

  On a CPU (`cache`: its last-level cache), a step whose members' temporaries outweigh their state takes as many
  at a time as keep those temporaries within the cache, if that is at least 2: the step is bound by memory
  traffic there. 8 members of the small LSTM language model ran at 0.64× the speed of their 8 runs one after
  another all at once, 0.87× two at a time; the MLP, whose state outweighs its activations, fell from 0.76× to
  0.49× in chunks (benchmarks/README.md)."""
  analysis = train_jit.lower(*args).compile().memory_analysis()
  if analysis is None:  # (a backend without the analysis)
    return num_members
  budget = memory_budget() if budget is None else budget
  if cache is None and jax.default_backend() == "cpu":
    cache = cpu_cache_bytes()
  fixed = analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
  per_member = analysis.temp_size_in_bytes / num_members
  # (Equal chunks: the largest divisor of the member count that fits.)
  largest = lambda limit: max([d for d in range(1, num_members + 1) if num_members % d == 0 and d <= limit],
                              default=0)
  chunk = largest((budget - fixed) / per_member if per_member else num_members) if budget >= fixed else 0
  if chunk < 1:
    gib = lambda n: f"{n / 2**30:.2f} GiB"
    raise ConfigError(f"the sweep's {num_members} members need {gib(fixed + per_member)} per device even one at a "
                      f"time ({gib(fixed)} for their train states and batches), more than the {gib(budget)} "
                      f"available; sweep fewer values (or fewer seeds), or use more devices or a smaller model")
  if cache and analysis.argument_size_in_bytes / num_members < per_member and largest(cache / per_member) >= 2:
    chunk = min(chunk, largest(cache / per_member))
  return chunk


def fit_members(train_jit, args, num_members: int, rebuild):
  """(step, members at a time): `train_jit` if all of a sweep's members fit at once (members_per_chunk on the
  step's `args`), else `rebuild(chunk)`, the step that trains `chunk` at a time."""
  chunk = members_per_chunk(train_jit, args, num_members)
  return (train_jit if chunk == num_members else rebuild(chunk)), chunk
