# The two commands of the README:
#   make demo   create .venv, install linearcnn, run the main job on the built-in data
#   make test   create .venv if needed, install, lint (ruff), type-check (mypy), run the whole test suite
#               (tests, and the package's docstring examples)
#   make test-fast   the same without the tests marked slow
# Override the torch requirement with e.g. `make demo TORCH='torch==2.5.1'` or TORCH='torch'.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PYTEST_ARGS ?= -q -n 2

.PHONY: install demo test test-fast lint theory bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/linearcnn train --arch vgg11-bn --width 16 --labels true --epochs 2 --limit 2000 --momentum 0.9 --out runs/demo --overwrite
	$(BIN)/linearcnn fit --checkpoint runs/demo/checkpoint.pt --init --plot runs/demo/fit.png

lint: install
	$(BIN)/ruff check linearcnn validation benchmarks tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow"

# Regenerate the committed theory documents and the stored derivation results (tests fail when they are stale).
theory: install
	$(BIN)/python -m linearcnn.theory.cache
	$(BIN)/linearcnn derive --format text --out theory/derivation.txt
	$(BIN)/linearcnn derive --format markdown --out theory/derivation.md
	$(BIN)/linearcnn derive --format latex --out theory/derivation.tex

clean:
	rm -rf $(VENV) build *.egg-info
