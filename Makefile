# Two commands from a fresh clone: `make chat` (the chat page on the bundled corpus) and
# `make test` (the fast and slow tiers). Both create .venv first, torch the CPU way.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: chat test test-fast bench install
chat: $(VENV)/.installed
	$(BIN)/python app.py

test: $(VENV)/.installed-engines
	$(BIN)/python -m pytest -m "slow or not slow" $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed

# torch 2.13.0 first: it is the CPU build pip finds on this machine; installed later (as a
# dependency of sentence-transformers) pip would fetch a CUDA build of several GB.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

# The Milvus store's and the Ray job's tests need their engines (the [milvus] and [ray] extras):
# `make test` installs them, `make chat` does not need them.
$(VENV)/.installed-engines: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[test,milvus,ray]"
	touch $@
