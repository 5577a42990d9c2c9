"""The HTML attention view, rendered in headless Chromium: its heads, its hover, no errors.

Needs Chromium (Debian's `chromium`, or ATTENTION_ZOO_CHROMIUM=path) and playwright's Python
package (the test extra; no browser download: it drives the installed Chromium). Without them
the test skips, or fails with ATTENTION_ZOO_REQUIRE_BROWSER=1 (CI: .ci/run installs Chromium).
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from attention_zoo.analysis import measures, view
from attention_zoo.data.base import Task
from attention_zoo.data.vocab import Vocab

REPO = pathlib.Path(__file__).resolve().parents[1]
LAYERS, HEADS = 2, 3
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu',
                  '--disable-background-networking', '--disable-component-update',
                  '--disable-sync', '--no-first-run']


@pytest.fixture(scope='module')
def browser_parts():
  """(sync_playwright, Chromium's path); skips, or fails when ATTENTION_ZOO_REQUIRE_BROWSER=1."""
  problems = []
  try:
    from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel
  except ImportError:
    sync_playwright = None
    problems.append("playwright is not installed (pip install -e '.[test]')")
  path = (os.environ.get('ATTENTION_ZOO_CHROMIUM') or shutil.which('chromium')
          or shutil.which('chromium-browser'))
  if path is None:
    problems.append('Chromium is not installed (apt-get install chromium, or set '
                    'ATTENTION_ZOO_CHROMIUM)')
  if problems:
    message = '; '.join(problems)
    if os.environ.get('ATTENTION_ZOO_REQUIRE_BROWSER') == '1':
      pytest.fail(message + ' (ATTENTION_ZOO_REQUIRE_BROWSER=1)')
    pytest.skip(message)
  return sync_playwright, path


def _softmax(x, valid):
  x = np.where(valid, x, -np.inf)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _toy():
  """A seq2seq batch of 2 (the second source padded) and what a 2-layer, 3-head encoder-decoder
  would sow: encoder self-attention [2, 3, 6, 6], decoder self [2, 3, 4, 4] and cross
  [2, 3, 4, 6] per layer, PAD keys masked."""
  vocab = Vocab('abcdefgh')
  task = Task(name='toy', kind='seq2seq', splits={}, model_dims={}, vocab=vocab)
  batch = {'source': np.array([vocab.encode('abcdef'), vocab.encode('gha') + [0, 0, 0]]),
           'target_out': np.array([vocab.encode('fed') + [2], vocab.encode('ahg') + [2]])}
  rng = np.random.default_rng(0)
  src_valid = (batch['source'] != 0)[:, None, None, :]  # [B, 1, 1, S]
  captured = {}
  for i in range(LAYERS):
    captured[f'encoder/layers/{i}/self_attn/attention_weights'] = _softmax(
        3 * rng.normal(size=(2, HEADS, 6, 6)), src_valid)
    captured[f'decoder/layers/{i}/self_attn/attention_weights'] = _softmax(
        3 * rng.normal(size=(2, HEADS, 4, 4)), np.tril(np.ones((4, 4), bool)))
    captured[f'decoder/layers/{i}/cross_attn/attention_weights'] = _softmax(
        3 * rng.normal(size=(2, HEADS, 4, 6)), src_valid)
  encoder = [captured[f'encoder/layers/{i}/self_attn/attention_weights'] for i in range(LAYERS)]
  rollouts = {'encoder/layers/*/self_attn': {
      'layers': ['encoder/layers/0/self_attn', 'encoder/layers/1/self_attn'],
      'examples': [{'tokens': list('abcdef'), 'matrix': measures.rollout(encoder)[0].tolist()}]}}
  return task, batch, captured, rollouts


def test_view_data_holds_every_layer_and_head_cropped():
  task, batch, captured, rollouts = _toy()
  data = view.view_data(task, batch, captured, examples=2, rollouts=rollouts)
  first, second = (e['groups'] for e in data['examples'])
  assert [g['name'] for g in first] == ['encoder/layers/*/self_attn', 'decoder/layers/*/self_attn',
                                        'decoder/layers/*/cross_attn',
                                        'rollout of encoder/layers/*/self_attn']
  assert [len(g['layers']) for g in first] == [LAYERS] * 3 + [1]
  assert all(len(layer['heads']) == HEADS for g in first[:3] for layer in g['layers'])
  cross = second[2]  # example 1: source 'gha' (3 real tokens), target 'ahg' + EOS
  assert cross['keys'] == ['g', 'h', 'a'] and cross['queries'] == ['a', 'h', 'g', '<eos>']
  assert np.array(cross['layers'][1]['heads'][2]).shape == (4, 3)
  assert len(second) == 3  # the rollout was kept for example 0 only


def test_view_renders_in_headless_chromium(tmp_path, browser_parts):
  sync_playwright, chromium = browser_parts
  task, batch, captured, rollouts = _toy()
  page_path = view.write_view(tmp_path / 'attention.html',
                              view.view_data(task, batch, captured, 2, rollouts), 'toy </script>')
  errors, requests = [], []
  with sync_playwright() as p:
    context = p.chromium.launch_persistent_context(
        str(tmp_path / 'profile'), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
        viewport={'width': 1100, 'height': 1000})
    try:
      page = context.new_page()
      page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
      page.on('pageerror', lambda e: errors.append(str(e)))
      page.on('request', lambda r: requests.append(r.url))
      page.goto(page_path.resolve().as_uri())
      page.wait_for_selector('.head canvas')
      assert page.title() == 'toy </script>'
      # the encoder's self-attention: 2 layers x 3 heads, each drawn
      heads = page.locator('.head')
      assert heads.count() == LAYERS * HEADS
      assert page.inner_text('#count') == f'{LAYERS} layers \u00d7 {HEADS} heads (6 heads)'
      shot = tmp_path / 'view.png'
      page.screenshot(path=str(shot), full_page=True)
      _assert_heads_drawn(shot, [heads.nth(i).bounding_box() for i in range(heads.count())])
      # hover a heatmap cell: its layer, head, tokens and weight
      box = heads.nth(4).locator('canvas').bounding_box()  # layer 1, head 1
      page.mouse.move(box['x'] + 1, box['y'] + 1)
      w = captured['encoder/layers/1/self_attn/attention_weights'][0, 1, 0, 0]
      assert page.inner_text('#tip') == f'encoder/layers/1/self_attn, head 1\na \u2192 a: {w:.3f}'
      # a head view: click layer 1 head 2, hover the query 'c': only its lines are shown
      heads.nth(5).click()
      assert 'selected' in heads.nth(5).get_attribute('class')
      page.hover('#lines text.query >> nth=2')
      row = captured['encoder/layers/1/self_attn/attention_weights'][0, 2, 2]
      shown = page.eval_on_selector_all(
          '#lines line', 'ls => ls.filter(l => l.style.display !== "none").map(l => +l.dataset.k)')
      assert shown == np.flatnonzero(row >= 0.01).tolist()  # the lines drawn: weight >= 0.01
      top = int(np.argmax(row))
      assert page.inner_text('#tip').splitlines()[:2] == [
          'c attends to:', f'  {"abcdef"[top]}  {row[top]:.3f}']
      # the other attentions: 2 x 3 heads of source-target attention; the rollout is one map
      page.select_option('#group', label='decoder/layers/*/cross_attn')
      assert page.locator('.head').count() == LAYERS * HEADS
      page.select_option('#group', label='rollout of encoder/layers/*/self_attn')
      assert page.locator('.head').count() == 1
      page.select_option('#example', label='example 1')
      assert page.locator('.head').count() == LAYERS * HEADS
    finally:
      context.close()
  assert errors == []
  assert all(url.startswith(('file:', 'data:', 'about:')) for url in requests), requests


def _assert_heads_drawn(png, boxes):
  """Each head's box in the screenshot is a heatmap: many colours, not the white page."""
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  image = matplotlib.image.imread(str(png))[..., :3]  # [height, width, 3] in [0, 1]
  for box in boxes:
    x, y = int(box['x']) + 3, int(box['y']) + 3
    crop = image[y:y + int(box['height']) - 6, x:x + int(box['width']) - 6]
    assert crop.size and (crop.mean(-1) < 0.9).mean() > 0.9  # drawn: dark viridis, not white
    assert len(np.unique(crop.reshape(-1, 3), axis=0)) >= 6


def test_browser_test_fails_instead_of_skipping_when_the_browser_is_required(tmp_path):
  """CI (.ci/run sets ATTENTION_ZOO_REQUIRE_BROWSER=1) never passes without Chromium."""
  test = 'tests/test_attention_view.py::test_view_renders_in_headless_chromium'
  env = {k: v for k, v in os.environ.items() if k != 'ATTENTION_ZOO_CHROMIUM'}
  run = lambda required: subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-n', '0', '-p', 'no:cacheprovider', test],
      capture_output=True, text=True, cwd=REPO, timeout=300,
      env=dict(env, PATH=str(tmp_path), ATTENTION_ZOO_REQUIRE_BROWSER=required))  # no chromium
  skipped = run('0')
  assert skipped.returncode == 0 and '1 skipped' in skipped.stdout, skipped.stdout
  failed = run('1')
  assert failed.returncode != 0 and 'Chromium is not installed' in failed.stdout, failed.stdout
  ci = (REPO / '.ci' / 'run').read_text()
  assert 'export ATTENTION_ZOO_REQUIRE_BROWSER=1' in ci and 'apt-get install' in ci
