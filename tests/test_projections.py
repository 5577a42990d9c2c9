"""On paper (attention_zoo/train/projections.py): the counts behind BUILD.md's table."""

import pathlib

import pytest

from attention_zoo.train import flops, projections

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_build_md_shows_the_printed_table():
  assert projections.table() in (REPO / 'BUILD.md').read_text()


def test_param_counts_match_vaswani_et_al():
  """The zoo's Transformers of the WMT rows have the paper's parameter counts (table 3: base
  65 M, big 213 M) to 3%."""
  base = projections.param_count(projections.WORKLOADS['WMT14 en-de base'])
  big = projections.param_count(projections.WORKLOADS['WMT14 en-de big'])
  assert base == pytest.approx(65e6, rel=0.03) and big == pytest.approx(213e6, rel=0.03)


def test_step_time_and_memory_follow_from_the_counts():
  w = projections.Workload(8, 2, 1, 16, 10, 4, 3, 5, 'a hand-sized case')
  # encoder 8·8²·3 + 4·8·16·3 + 4·9·8; decoder 12·8²·5 + 4·8²·3 + 4·8·16·5 + 4·25·8 + 4·15·8;
  # output 2·8·10·5; x 3 (fwd + bwd) x 4 pairs
  forward = (1536 + 1536 + 288) + (3840 + 768 + 2560 + 800 + 480) + 800
  assert projections.step_flops(w) == 3 * 4 * forward
  # per layer s·b·h·(34 + 5·a·s/h) for s = 3 and 5; cross: 13·t·b·h + 4·s·b·h + 5·a·t·s·b; loss
  b = 2  # sentences on one of 2 devices
  acts = (3 * b * 8 * (34 + 5 * 2 * 3 / 8) + 5 * b * 8 * (34 + 5 * 2 * 5 / 8)
          + 13 * 5 * b * 8 + 4 * 3 * b * 8 + 5 * 2 * 5 * 3 * b + 8 * b * 5 * 10)
  memory = projections.memory_per_device(w, 2, params=1000)
  assert memory['activations'] == pytest.approx(acts)
  assert memory['total'] == pytest.approx(16_000 + acts)
  for row in projections.rows(mfu=0.5):
    target = projections.TARGETS[row['target']]
    assert row['step_s'] == pytest.approx(
        row['flops_per_step'] / (0.5 * target.devices * target.peak.bfloat16))
  assert projections.TARGETS['TPU v4-8'].peak is flops.PEAKS['TPU v4']
