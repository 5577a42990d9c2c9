"""The committed docs against their recomputation: every line of REPRODUCTIONS.md and of the
README's card tables must equal what attention_zoo.reproductions.render draws from the reports
that attention_zoo.reproductions.evidence derives from the committed runs and cards.py.

`problems` names each line that differs (file, line number, card, expected and found text), so
an edited number, verdict, target or deviation, in the docs or in the definition, is found and
named; so is a per-run file edited without redrawing the docs.
"""

from __future__ import annotations

import difflib
import pathlib
import re

from attention_zoo.reproductions import evidence, render

_SECTION = re.compile(r'^## .*\(`(\w+)`\)$')  # a card's heading in REPRODUCTIONS.md
_BLOCK = re.compile(r'^<!-- card:(\w+) -->$')  # a card's block in the README


def _card_at(lines: list[str], index: int) -> str:
  """The card whose section (or README block) holds line `index`, or '-' before any."""
  for line in reversed(lines[:index + 1]):
    match = _SECTION.match(line) or _BLOCK.match(line)
    if match:
      return match.group(1)
  return '-'


def diff(name: str, expected: str, found: str) -> list[str]:
  """One message per line of `found` that differs from `expected` (or is missing from it)."""
  want, have = expected.splitlines(), found.splitlines()
  out = []
  matcher = difflib.SequenceMatcher(None, want, have, autojunk=False)
  for tag, w0, w1, h0, h1 in matcher.get_opcodes():
    if tag == 'equal':
      continue
    for k in range(max(w1 - w0, h1 - h0)):
      w = want[w0 + k] if w0 + k < w1 else None
      h = have[h0 + k] if h0 + k < h1 else None
      line = min(h0 + k, len(have) - 1) if have else 0
      out.append(f'{name}:{line + 1} (card {_card_at(have, line)}): expected {w!r}, found {h!r}')
  return out


def problems(folder: pathlib.Path, reproductions_md: str, readme: str) -> list[str]:
  """Every difference between the committed docs and the docs drawn from the evidence under
  `folder` (the repository's reproductions/); [] when they agree."""
  found = evidence.load(folder)
  out = diff('REPRODUCTIONS.md', render.render(found), reproductions_md)
  blocks = render.readme_blocks(found)
  for name in blocks:
    if f'<!-- card:{name} -->' not in readme or f'<!-- /card:{name} -->' not in readme:
      out.append(f'README.md: no <!-- card:{name} --> ... <!-- /card:{name} --> block for a '
                 f'card with readme=True')
  out += diff('README.md', render.splice(readme, blocks), readme)
  return out
