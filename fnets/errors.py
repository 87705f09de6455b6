"""The errors a user can cause. The launcher prints their message as one line and exits 2; anything else is a
bug and keeps its traceback. Every message names the problem and the fix."""


class UsageError(Exception):
  """A user's mistake: config, flags, data or workdir."""


class ConfigError(UsageError):
  """A config field or value that does not exist or does not fit."""


class RunError(UsageError):
  """A run that cannot start or go on (its workdir, its checkpoints, a non-finite loss)."""


class DataError(UsageError):
  """A dataset that cannot be read; the message says what is missing and how to provide it."""
