"""Opening a data file, plain or gzip, with errors that name the file and what is wrong with it."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from typing import IO, Iterator

# What gzip raises while reading a damaged .gz: cut short (EOFError), not gzip at all or a failed
# CRC / length check (BadGzipFile), a corrupt deflate stream (zlib.error).
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


@contextlib.contextmanager
def open_file(path: str, mode: str = 'rb', **kwargs) -> Iterator[IO]:
  """`path` opened for reading, through gzip when its name ends in .gz (`kwargs`: open's, e.g.
  encoding for a text mode). A .gz that is cut short or corrupt raises ValueError naming the file,
  whenever the reading inside the `with` block reaches the damage.

  Example:
    with open_file('train.de.gz', 'rt', encoding='utf-8') as f:
      text = f.read()
  """
  if not str(path).endswith('.gz'):
    with open(path, mode, **kwargs) as f:
      yield f
    return
  try:
    with gzip.open(path, mode, **kwargs) as f:
      yield f
  except GZIP_ERRORS as e:
    raise ValueError(f'{path}: truncated or corrupt gzip file ({type(e).__name__}: {e})') from e
