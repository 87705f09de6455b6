"""The tasks, one module per `config.task`: each has `check(config)`, its building blocks (data, model,
optimizer, initial state, jitted steps) and `setup(config) -> state.Task`, which the loop trains."""

from fnets.tasks import char_lm, classify

TASKS = {"classify": classify, "char_lm": char_lm}
