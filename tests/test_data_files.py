"""Damaged data files: each reader's error names the file and what is wrong with it."""

import gzip
import re

import numpy as np
import pytest

from attention_zoo.data import babi, char_lm, mnist, parallel_text

TEXT = ''.join(f'line {i}: the quick brown fox\n' for i in range(2000)).encode()
# The readers of .gz files, each given a path.
READERS = {'parallel_text.read_lines': parallel_text.read_lines,
           'char_lm.read_text': char_lm.read_text,
           'mnist.read_idx': lambda path: mnist.read_idx(path, 2049)}


def _gz(tmp_path, data: bytes):
  path = tmp_path / 'data.gz'
  path.write_bytes(gzip.compress(data))
  return path


def _cut(path):
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _flip(path):
  raw = bytearray(path.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  path.write_bytes(bytes(raw))


def _not_gzip(path):
  path.write_bytes(TEXT[:100])


@pytest.mark.parametrize('reader', sorted(READERS))
@pytest.mark.parametrize('damage,error', [(_cut, 'EOFError'), (_flip, ''), (_not_gzip,
                                                                              'BadGzipFile')],
                         ids=['truncated', 'flipped_byte', 'not_gzip'])
def test_damaged_gz_names_the_file(tmp_path, reader, damage, error):
  path = _gz(tmp_path, TEXT)
  damage(path)
  with pytest.raises(ValueError, match=re.escape(f'{path}: truncated or corrupt gzip file '
                                                 f'({error}')):
    READERS[reader](str(path))


def test_intact_gz_reads_back_whole(tmp_path):
  path = _gz(tmp_path, TEXT)
  assert parallel_text.read_lines(str(path)) == TEXT.decode().splitlines()
  assert char_lm.read_text(str(path)) == TEXT.decode()


def test_idx_with_the_wrong_magic_names_file_expected_and_found(tmp_path):
  path = tmp_path / 'labels-idx1-ubyte'  # raw (not .gz): an images header where labels belong
  path.write_bytes(np.array([2051, 1, 2, 2], '>u4').tobytes() + bytes(4))
  with pytest.raises(ValueError, match=re.escape(f'{path} has magic number 2051, expected 2049')):
    mnist.read_idx(str(path), 2049)


@pytest.mark.parametrize('line', ['Mary went to the kitchen.',  # no line id
                                  'x Where is Mary?\tkitchen\t1',  # a line id that is no number
                                  '2 Where is Mary?\tkitchen',  # no supporting ids
                                  '2 Where is Mary?\t\t1',  # no answer
                                  '2 Where is Mary?\tkitchen\tone'])  # ids that are no numbers
def test_babi_line_that_does_not_parse_names_file_and_line(tmp_path, line):
  path = tmp_path / 'qa1_single-supporting-fact_train.txt'
  path.write_text(f'1 Mary went to the kitchen.\n{line}\n')
  with pytest.raises(ValueError, match=re.escape(f'{path}:2: ')):
    babi.parse_file(str(path))
