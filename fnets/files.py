"""Writing a file so that no reader, and no crash, ever sees half of it."""

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def write_atomic(path: str, content: str | Callable[[BinaryIO], None]) -> None:
  """Writes `content` (text, or a function that writes to a binary file) under a temporary name beside `path`,
  then renames it to `path`. On any error the temporary file is removed and `path` is left as it was."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      content(f) if callable(content) else f.write(content.encode())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
