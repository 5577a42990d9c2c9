# The README's two commands. Each creates .venv and installs the package when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export JAX_COMPILATION_CACHE_DIR ?= $(HOME)/.cache/attention_zoo/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0

.PHONY: demo test lint bench notebooks install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	$(PY) -c 'from attention_zoo.attention import native; print("native CPU attention:", native.available())'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.demo --workdir=runs/demo --parallel=2

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m experiments.bench attention

# notebooks/*.py (jupytext percent format) -> executed .ipynb in NOTEBOOKS_OUT (default: beside
# them; gitignored). ATTENTION_ZOO_NOTEBOOK_SIZE=tiny trains at CI's size (tests/test_notebooks.py).
NOTEBOOKS ?= $(sort $(wildcard notebooks/[0-9]*.py))
NOTEBOOKS_OUT ?= notebooks
notebooks: $(STAMP)
	mkdir -p $(NOTEBOOKS_OUT)
	for nb in $(NOTEBOOKS); do \
	  out=$(NOTEBOOKS_OUT)/$$(basename $$nb .py).ipynb; \
	  $(VENV)/bin/jupytext --to ipynb --output $$out $$nb && \
	  $(VENV)/bin/jupyter-execute --inplace $$out || exit 1; \
	done

clean:
	rm -rf $(VENV) runs
