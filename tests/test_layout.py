"""The house's layout, checked statically: no import cycle among the package's modules (every
import counted, those inside functions too) and no module reaching into another's privates."""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = 'attention_zoo'


def _modules() -> dict[str, ast.Module]:
  out = {}
  for path in sorted((REPO / PACKAGE).rglob('*.py')):
    parts = path.relative_to(REPO).with_suffix('').parts
    name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
    out[name] = ast.parse(path.read_text(), str(path))
  return out


def _imports(name: str, tree: ast.Module, known: set[str]) -> dict[str, str]:
  """{local name: module} of every package module `tree` imports (aliases included)."""
  out = {}
  package = name if any(m.startswith(name + '.') for m in known) else name.rpartition('.')[0]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name in known:
          out[a.asname or a.name] = a.name
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] + (
            [node.module] if node.module else []))
      for a in node.names:
        full = f'{base}.{a.name}'
        out[a.asname or a.name] = full if full in known else base
  return {k: v for k, v in out.items() if v in known}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """A cycle of `graph` (module -> modules it imports), or None."""
  state: dict[str, int] = {}  # 1: on the path, 2: done

  def visit(m, path):
    state[m] = 1
    for d in sorted(graph.get(m, ())):
      if state.get(d) == 1:
        return path[path.index(d):] + [d]
      if d not in state and (found := visit(d, path + [d])):
        return found
    state[m] = 2
    return None

  for m in sorted(graph):
    if m not in state and (found := visit(m, [m])):
      return found
  return None


def test_no_import_cycle():
  modules = _modules()
  known = set(modules)
  graph = {m: {d for d in _imports(m, t, known).values() if d != m} for m, t in modules.items()}
  # a package imports its submodules to re-export them: count it as their dependent only
  graph = {m: {d for d in deps if not d.startswith(m + '.')} for m, deps in graph.items()}
  assert _cycle(graph) is None, 'import cycle: ' + ' -> '.join(_cycle(graph))


def test_no_module_calls_another_modules_private_names():
  modules = _modules()
  known = set(modules)
  found = []
  for name, tree in modules.items():
    aliases = _imports(name, tree, known)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.attr.startswith('_') and not node.attr.startswith('__')
          and aliases.get(node.value.id, name) != name):
        found.append(f'{name}:{node.lineno} {node.value.id}.{node.attr}')
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom):
        found += [f'{name}:{node.lineno} from {node.module} import {a.name}' for a in node.names
                  if a.name.startswith('_') and not a.name.startswith('__')]
  assert not found, found


def test_the_checks_see_a_cycle_and_resolve_imports():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None
  tree = ast.parse('from attention_zoo.train import loop as lp\nlp._evaluate\n'
                   'from . import steps\n')
  got = _imports('attention_zoo.train.seeds', tree,
                 {'attention_zoo.train.loop', 'attention_zoo.train.steps'})
  assert got == {'lp': 'attention_zoo.train.loop', 'steps': 'attention_zoo.train.steps'}
