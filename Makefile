# Two commands from a fresh clone: `make chat` (the chat page on the bundled corpus) and
# `make test` (the fast and slow tiers). Both create .venv first, torch the CPU way.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False

# Exact versions the suite passed with (pip's -c: they pin, they add nothing); `make lock` refreshes them.
LOCK := constraints.txt
TORCH := torch==2.13.0

.PHONY: chat test test-fast bench install lock
chat: $(VENV)/.installed
	$(BIN)/python app.py

test: $(VENV)/.installed-engines
	$(BIN)/python -m pytest -m "slow or not slow" $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed

# torch 2.13.0 first: it is the CPU build pip finds on this machine; installed later (as a
# dependency of sentence-transformers) pip would fetch a CUDA build of several GB.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip -c $(LOCK)
	$(BIN)/python -m pip install -q "$(TORCH)" -c $(LOCK)
	$(BIN)/python -m pip install -q -e ".[test]" -c $(LOCK)
	touch $@

# The Milvus store's and the Ray job's tests need their engines (the [milvus] and [ray] extras):
# `make test` installs them, `make chat` does not need them.
$(VENV)/.installed-engines: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[test,milvus,ray]" -c $(LOCK)
	touch $@

# New venvs from pyproject.toml and .ci/install-llm alone (torch first), frozen into $(LOCK) and
# .ci/constraints-llm.txt; then the tests, on .venv installed again from the new pins (~15 min).
lock:
	PY=$(PY) TORCH=$(TORCH) bash .ci/lock
	$(MAKE) test
