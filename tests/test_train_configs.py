"""Each config's tiny size trains a few steps through the real loop and writes the whole workdir."""

import json

import numpy as np
import pytest

from attention_zoo.train import flops
from attention_zoo.train import workdir as wd
from attention_zoo.train.loop import train_and_evaluate
from tests.fixtures import CONFIGS, tiny

WORKDIR_FILES = {wd.CONFIG, wd.METRICS, wd.RESULTS, wd.CHECKPOINTS}


@pytest.mark.parametrize('name', CONFIGS)
def test_tiny_config_trains_and_writes_workdir(name, tmp_path_factory, request):
  config = tiny(name, str(tmp_path_factory.getbasetemp() / 'tfds'), request)
  config.train.update(steps=4, log_every=2, eval_every=2, checkpoint_every=2)
  config.eval.max_examples = 64
  workdir = tmp_path_factory.mktemp(name)
  results = train_and_evaluate(config, workdir)
  names = {p.name for p in workdir.iterdir()}
  assert WORKDIR_FILES <= names and any(n.startswith('events.out.tfevents') for n in names)
  assert sorted(int(p.name) for p in (workdir / wd.CHECKPOINTS).iterdir()) == [2, 4]
  assert json.loads((workdir / wd.CONFIG).read_text())['model_name'] == config.model_name
  rows = wd.read_jsonl(workdir / wd.METRICS)
  assert {(r['step'], r['split']) for r in rows} >= {(2, 'train'), (4, 'train'), (2, 'validation'),
                                                     (4, 'validation'), (4, 'test')}
  assert all(np.isfinite(r['loss']) for r in rows)
  assert results['num_params'] > 0 and results['steps_per_s'] > 0 and results['compile_s'] > 0
  # MFU in every run: the step's model FLOPs from its compiled program, against the CPU's peak
  assert results['flops_per_step'] > 0 and results['flops_source'] in flops.SOURCES
  assert 0 < results['mfu'] <= 1
  assert 0 <= results['test']['accuracy'] <= 1
  if config.model_name in ('seq2seq', 'transformer'):
    assert 0 <= results['test']['gen_exact_match'] <= 1
    assert results['tokens_per_s'] > 0
    assert (workdir / wd.SAMPLES).exists()
  if config.task.name == 'multi30k':  # BLEU with the sacrebleu signature that produced it
    assert 0 <= results['test']['gen_bleu'] <= 100
    assert results['final_evaluation']['bleu_signature'].startswith('nrefs:1|case:mixed')
