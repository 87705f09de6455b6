"""Research recipes on the pure model API: what `vmap`, `grad`, `jvp` give a researcher in a few lines each.

  per_example_grads   ∇ of each example's loss (vmap of grad), and their norms
  lr_sweep            one program training the same model at several learning rates (vmap over the rate)
  saliency            ∂(class score)/∂(input pixels) of a classifier
  gradient_flow       ‖∂L/∂h_t‖ against t for the LSTM or the vanilla RNN: vanishing gradients, shown
  lstm_trace          the LSTM's gates (f, i, g, o) and cell state over a sequence
  hvp, sharpness      Hessian-vector products, and the top Hessian eigenvalue by power iteration
Seeds and hyperparameters of a whole experiment trained in one jitted step are a sweep of its config
(`--config.sweep.seed=(0,1,2) --config.sweep.learning_rate=(0.01,0.1)`, fnets/sweeps.py).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from fnets.models import lstm, rnn


def per_example_grads(loss_fn: Callable, params, batch):
  """Gradients of `loss_fn(params, batch)` for each example of `batch` (a pytree whose leaves share a leading
  batch axis). Returns (grads with a leading batch axis, their global L2 norms)."""
  one = lambda params, example: loss_fn(params, jax.tree.map(lambda x: x[None], example))
  grads = jax.vmap(jax.grad(one), in_axes=(None, 0))(params, batch)
  norms = jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads)))
  return grads, norms


def lr_sweep(loss_fn: Callable, params, batches, learning_rates, momentum: float = 0.9):
  """Trains copies of `params` with SGD at each learning rate, all in one jitted program (vmap over the rate).
  `batches` is a pytree whose leaves have a leading step axis. Returns (final params with a leading rate axis,
  losses of shape (num_rates, num_steps))."""
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=momentum)

  def train_one(lr):
    opt_state = tx.init(params)
    opt_state.hyperparams["learning_rate"] = lr

    def step(carry, batch):
      p, s = carry
      loss, grads = jax.value_and_grad(loss_fn)(p, batch)
      updates, s = tx.update(grads, s, p)
      return (optax.apply_updates(p, updates), s), loss

    (p, _), losses = jax.lax.scan(step, (params, opt_state), batches)
    return p, losses

  return jax.jit(jax.vmap(train_one))(jnp.asarray(learning_rates, jnp.float32))


def saliency(logits_fn: Callable, x_BHWC, labels_B):
  """|∂ logit[label] / ∂ pixel|, maximised over channels: (B, H, W). `logits_fn(x) -> (B, num_classes)`."""
  score = lambda x: jnp.sum(jnp.take_along_axis(logits_fn(x), labels_B[:, None], axis=1))
  return jnp.max(jnp.abs(jax.grad(score)(x_BHWC)), axis=-1)


def _hidden_states(cell: str, layer: dict, x_BxTxD, perturbation_TxBxH):
  """Runs one layer (the models' reference path) with `perturbation_TxBxH[t]` added to h_t, so that
  ∂L/∂perturbation[t] = ∂L/∂h_t."""
  module = {"lstm": lstm, "rnn": rnn}[cell]
  return module.trace_layer(layer, x_BxTxD, h_offset_BxTxH=perturbation_TxBxH.swapaxes(0, 1))["h"].swapaxes(0, 1)


def gradient_flow(cell: str, layer: dict, x_BxTxD, loss_from_last_h: Callable):
  """‖∂L/∂h_t‖ (mean over the batch) for t = 0..T-1, where L = loss_from_last_h(h_{T-1}) depends on the sequence
  only through the last hidden state. For the vanilla RNN it decays roughly geometrically going back in time;
  the LSTM's additive cell path keeps it from vanishing."""
  B, T, _ = x_BxTxD.shape
  eps = jnp.zeros((T, B, layer["U"].shape[0]))
  loss = lambda eps: loss_from_last_h(_hidden_states(cell, layer, x_BxTxD, eps)[-1])
  grads_TxBxH = jax.grad(loss)(eps)
  return jnp.mean(jnp.linalg.norm(grads_TxBxH, axis=-1), axis=1)


def lstm_trace(layer: dict, x_BxTxD):
  """The gates and states of one LSTM layer at every step: dict of (B, T, H) arrays f, i, g, o, c, h (the models'
  reference path, `lstm.trace_layer`)."""
  return lstm.trace_layer(layer, x_BxTxD)


def hvp(loss_fn: Callable, params, v):
  """Hessian-vector product H·v of `loss_fn` at `params` (forward-over-reverse: a jvp of the gradient)."""
  return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def sharpness(loss_fn: Callable, params, key, num_iters: int = 20):
  """The largest-magnitude Hessian eigenvalue of `loss_fn` at `params`, by power iteration on H·v."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  v = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
  normalize = lambda v: jax.tree.map(lambda x: x / optax.tree.norm(v), v)
  hv_fn = jax.jit(lambda v: hvp(loss_fn, params, v))

  def body(_, carry):
    v, _ = carry
    hv = hv_fn(v)
    eigenvalue = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(hv)))
    return normalize(hv), eigenvalue

  _, eigenvalue = jax.lax.fori_loop(0, num_iters, body, (normalize(v), jnp.zeros(())))
  return eigenvalue
