"""A run's attention as one self-contained HTML page to explore (inline CSS and JS, no network).

For each example and each attention of the model (encoder self-attention, decoder
self-attention, source-target attention, a seq2seq alignment, a memory network's hops, and the
attention rollout of each self-attention stack), a grid of layers x heads, each head a heatmap:
hover a cell for its query token, key token and weight; click a head to draw it as a head view
(after bertviz's, Vig 2019): query tokens left, key tokens right, one line per pair with the
weight as its opacity; hover a token to keep only its lines and list its largest weights.

  from attention_zoo.analysis import view
  view.write_view('attention.html', view.view_data(task, batch, maps.capture(model, task, batch)))

Data (view_data): {"examples": [{"groups": [{"name", "queries": [tokens], "keys": [tokens],
"layers": [{"name", "heads": [[[weight per key] per query] per head]}]}]}]}. The page counts
its heads in the elements `.head` (one per layer x head of the group shown).
"""

from __future__ import annotations

import html
import json
import pathlib
import re
from typing import Any, Mapping

import numpy as np

from attention_zoo.analysis import maps

_LAYER = re.compile(r'^(.*)/layers/(\d+)/(.*)$')


def group_key(path: str) -> tuple[str, int]:
  """'decoder/layers/1/cross_attn/attention_weights' -> ('decoder/layers/*/cross_attn', 1)."""
  name = path.rsplit('/', 1)[0] if '/' in path else 'attention'
  found = _LAYER.match(name)
  return (f'{found[1]}/layers/*/{found[3]}', int(found[2])) if found else (name, 0)


def _round(m: np.ndarray) -> list:
  return np.round(np.asarray(m, np.float64), 3).tolist()


def _groups(task, batch: Mapping[str, np.ndarray], captured: Mapping[str, np.ndarray],
            i: int) -> list[dict[str, Any]]:
  """The groups (one per attention of the model, its layers in order) of example i."""
  labels = maps.axis_labels(task, batch, i)
  groups: dict[str, dict[str, Any]] = {}
  layer_of: dict[str, int] = {}
  for path, w in captured.items():
    if path.endswith('se_weights') or np.ndim(w) < 3:
      continue
    key, index = group_key(path)
    found = maps.matrices(path, np.asarray(w), i, labels)
    if not found:
      continue
    if task.kind == 'qa' and np.ndim(w) == 3:  # memory hops [B, hops, M]: a layer per hop
      _, m, _, keys = found[0]
      question = ' '.join(task.vocab.labels(batch['query'][i])) if task.vocab else 'question'
      groups[key] = {'name': f'{key} (hops)', 'queries': [question], 'keys': keys,
                     'layers': [{'name': f'hop {h + 1}', 'heads': [_round(m[h:h + 1])]}
                                for h in range(m.shape[0])]}
      continue
    _, _, rows, cols = found[0]
    group = groups.setdefault(key, {'name': key, 'queries': rows, 'keys': cols, 'layers': []})
    group['layers'].append({'name': path.rsplit('/', 1)[0] or path,
                            'heads': [_round(m) for _, m, _, _ in found]})
    layer_of[group['layers'][-1]['name']] = index
  for group in groups.values():
    group['layers'].sort(key=lambda layer: layer_of.get(layer['name'], 0))
  # the encoder first, then the decoder's self-attention, then what reads the source
  return sorted(groups.values(), key=lambda g: (not g['name'].startswith('encoder'),
                                                'self' not in g['name']))


def view_data(task, batch: Mapping[str, np.ndarray], captured: Mapping[str, np.ndarray],
              examples: int = 2, rollouts: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The page's data for the first `examples` examples of `batch` (captured = maps.capture(...));
  rollouts: measures.json's "rollout" (each stack shown as one more group)."""
  n = min(examples, len(next(iter(batch.values()))))
  out = []
  for i in range(n):
    groups = _groups(task, batch, captured, i)
    for stack, found in (rollouts or {}).items():
      if i < len(found['examples']):
        tokens, matrix = found['examples'][i]['tokens'], found['examples'][i]['matrix']
        groups.append({'name': f'rollout of {stack}', 'queries': tokens, 'keys': tokens,
                       'layers': [{'name': f'rollout over {len(found["layers"])} layers',
                                   'heads': [_round(matrix)]}]})
    out.append({'groups': groups})
  return {'examples': out}


def write_view(path: str | pathlib.Path, data: Mapping[str, Any], title: str = 'attention'
               ) -> pathlib.Path:
  """Writes the page: the data inline as JSON (every '<' escaped, so no text ends the script)."""
  path = pathlib.Path(path)
  payload = json.dumps(data, separators=(',', ':')).replace('<', '\\u003c')
  page = (_PAGE.replace('__TITLE__', html.escape(title))
          .replace('__DATA__', payload))
  path.write_text(page, encoding='utf-8')
  return path


_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 16px; margin: 0 0 8px; }
.controls { display: flex; gap: 16px; align-items: center; margin-bottom: 10px; flex-wrap: wrap; }
#grid { display: grid; gap: 6px; align-items: start; justify-content: start;
        margin-bottom: 14px; }
.rowlabel { font-size: 11px; color: #555; align-self: center; max-width: 180px;
            overflow-wrap: anywhere; }
.collabel { font-size: 11px; color: #555; text-align: center; }
.head { border: 2px solid transparent; cursor: pointer; line-height: 0; justify-self: start; }
.head.selected { border-color: #e4572e; }
.head canvas { image-rendering: pixelated; }
#detail svg text { font-size: 12px; cursor: default; }
#detail svg text.on { font-weight: bold; fill: #e4572e; }
#detail line { stroke: #1f5fa8; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 4px 7px;
       border-radius: 3px; font-size: 12px; display: none; white-space: pre; z-index: 2; }
.note { color: #666; font-size: 12px; }
</style></head>
<body>
<h1>__TITLE__</h1>
<div class="controls">
  <label>example <select id="example"></select></label>
  <label>attention <select id="group"></select></label>
  <span id="count" class="note"></span>
</div>
<div class="note">Rows: layers (or hops); columns: heads. Each cell: queries down, keys across.
Hover a cell for its tokens and weight; click a head for its head view.</div>
<div id="grid"></div>
<div id="detail"><div id="detail-title" class="note"></div><svg id="lines"></svg></div>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
(function () {
  'use strict';
  const DATA = JSON.parse(document.getElementById('data').textContent);
  const state = {example: 0, group: 0, layer: 0, head: 0};
  const $ = (id) => document.getElementById(id);
  const tip = $('tip');
  const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  function color(v) {  // viridis-like ramp, v in [0, 1]
    const x = Math.max(0, Math.min(1, v)) * (STOPS.length - 1);
    const i = Math.min(STOPS.length - 2, Math.floor(x)), f = x - i;
    const c = STOPS[i].map((a, j) => Math.round(a + f * (STOPS[i + 1][j] - a)));
    return 'rgb(' + c.join(',') + ')';
  }
  function showTip(text, ev) {
    tip.textContent = text;
    tip.style.display = 'block';
    tip.style.left = (ev.clientX + 12) + 'px';
    tip.style.top = (ev.clientY + 12) + 'px';
  }
  function hideTip() { tip.style.display = 'none'; }
  function groups() { return (DATA.examples[state.example] || {groups: []}).groups; }
  function group() { return groups()[state.group]; }

  function fillSelect(sel, names, value) {
    sel.innerHTML = '';
    names.forEach((name, i) => {
      const o = document.createElement('option');
      o.value = i; o.textContent = name; sel.appendChild(o);
    });
    sel.value = value;
  }

  function heatmap(g, li, hi) {
    const m = g.layers[li].heads[hi];
    const q = m.length, k = q ? m[0].length : 0;
    const cell = Math.max(2, Math.min(12, Math.floor(150 / Math.max(q, k, 1))));
    const canvas = document.createElement('canvas');
    canvas.width = k * cell; canvas.height = q * cell;
    const ctx = canvas.getContext('2d');
    let top = 0;
    m.forEach((row) => row.forEach((v) => { top = Math.max(top, v); }));
    m.forEach((row, r) => row.forEach((v, c) => {
      ctx.fillStyle = color(top > 0 ? v / top : 0);
      ctx.fillRect(c * cell, r * cell, cell, cell);
    }));
    canvas.addEventListener('mousemove', (ev) => {
      const box = canvas.getBoundingClientRect();
      const c = Math.floor((ev.clientX - box.left) / cell);
      const r = Math.floor((ev.clientY - box.top) / cell);
      if (r < 0 || r >= q || c < 0 || c >= k) { hideTip(); return; }
      showTip(g.layers[li].name + ', head ' + hi + '\n' + g.queries[r] + ' \u2192 ' + g.keys[c] +
              ': ' + m[r][c].toFixed(3), ev);
    });
    canvas.addEventListener('mouseleave', hideTip);
    return canvas;
  }

  function renderGrid() {
    const grid = $('grid'), g = group();
    grid.innerHTML = '';
    if (!g) { $('count').textContent = 'no attention captured'; return; }
    const heads = Math.max(...g.layers.map((l) => l.heads.length));
    grid.style.gridTemplateColumns = 'auto repeat(' + heads + ', auto)';
    grid.appendChild(document.createElement('div'));
    for (let h = 0; h < heads; h++) {
      const d = document.createElement('div');
      d.className = 'collabel'; d.textContent = 'head ' + h; grid.appendChild(d);
    }
    g.layers.forEach((layer, li) => {
      const label = document.createElement('div');
      label.className = 'rowlabel'; label.textContent = layer.name; grid.appendChild(label);
      for (let hi = 0; hi < heads; hi++) {
        const cell = document.createElement('div');
        if (hi < layer.heads.length) {
          cell.className = 'head';
          cell.dataset.layer = li; cell.dataset.head = hi;
          if (li === state.layer && hi === state.head) cell.classList.add('selected');
          cell.appendChild(heatmap(g, li, hi));
          cell.addEventListener('click', () => { state.layer = li; state.head = hi; render(); });
        }
        grid.appendChild(cell);
      }
    });
    const total = g.layers.reduce((a, l) => a + l.heads.length, 0);
    $('count').textContent = g.layers.length + ' layers \u00d7 ' + heads + ' heads (' + total +
                             ' heads)';
  }

  function renderDetail() {
    const svg = $('lines'), g = group();
    svg.innerHTML = '';
    if (!g) return;
    const layer = g.layers[state.layer] || g.layers[0];
    const m = layer.heads[state.head] || layer.heads[0];
    $('detail-title').textContent = 'head view: ' + layer.name + ', head ' + state.head +
                                    ' (hover a token)';
    const NS = 'http://www.w3.org/2000/svg', step = 18, left = 170, right = 430;
    const rows = Math.max(g.queries.length, g.keys.length);
    svg.setAttribute('width', 640); svg.setAttribute('height', rows * step + 20);
    const lines = [];
    m.forEach((row, r) => row.forEach((v, c) => {
      if (v < 0.01) return;
      const line = document.createElementNS(NS, 'line');
      line.setAttribute('x1', left + 6); line.setAttribute('y1', 14 + r * step);
      line.setAttribute('x2', right - 6); line.setAttribute('y2', 14 + c * step);
      line.setAttribute('stroke-width', 2); line.setAttribute('stroke-opacity', v);
      line.dataset.q = r; line.dataset.k = c;
      svg.appendChild(line); lines.push(line);
    }));
    function only(attr, i) {
      lines.forEach((l) => {
        l.style.display = (i === null || l.dataset[attr] == i) ? '' : 'none';
      });
    }
    function token(text, x, y, anchor, attr, i) {
      const t = document.createElementNS(NS, 'text');
      t.setAttribute('x', x); t.setAttribute('y', y); t.setAttribute('text-anchor', anchor);
      t.textContent = text; t.classList.add('token', attr === 'q' ? 'query' : 'key');
      t.addEventListener('mouseenter', (ev) => {
        t.classList.add('on'); only(attr, i);
        const ws = attr === 'q' ? m[i].map((v, j) => [v, g.keys[j]])
                                : m.map((row, j) => [row[i], g.queries[j]]);
        ws.sort((a, b) => b[0] - a[0]);
        showTip(text + (attr === 'q' ? ' attends to:\n' : ' is attended by:\n') +
                ws.slice(0, 5).map((p) => '  ' + p[1] + '  ' + p[0].toFixed(3)).join('\n'), ev);
      });
      t.addEventListener('mouseleave', () => {
        t.classList.remove('on'); only(attr, null); hideTip();
      });
      svg.appendChild(t);
    }
    g.queries.forEach((text, r) => token(text, left, 18 + r * step, 'end', 'q', r));
    g.keys.forEach((text, c) => token(text, right, 18 + c * step, 'start', 'k', c));
  }

  function render() { renderGrid(); renderDetail(); }

  fillSelect($('example'), DATA.examples.map((_, i) => 'example ' + i), 0);
  function fillGroups() { fillSelect($('group'), groups().map((g) => g.name), state.group); }
  $('example').addEventListener('change', (ev) => {
    state.example = +ev.target.value; state.group = 0; state.layer = 0; state.head = 0;
    fillGroups(); render();
  });
  $('group').addEventListener('change', (ev) => {
    state.group = +ev.target.value; state.layer = 0; state.head = 0; render();
  });
  fillGroups();
  render();
})();
</script>
</body></html>
"""
