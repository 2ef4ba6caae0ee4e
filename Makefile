# Two commands: `make run` (train on the embedded corpus) and `make test`.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
SEEDS ?= 3
BUDGET ?= 150
ARMS ?= baseline v
MODE ?= time
STEPS ?= 0

.PHONY: setup extras sources data index run test bench bench-cost compare clean distclean

setup: $(VENV)/.core
# The data build needs only numpy and sentencepiece: installed first, so that `make test` can build
# the corpus while torch installs (-j2 below)
$(VENV)/.data: requirements.txt
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check $$(grep -E '^(numpy|sentencepiece)==' requirements.txt)
	touch $@
$(VENV)/.core: requirements.txt $(VENV)/.data
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

extras: $(VENV)/.extras
$(VENV)/.extras: requirements-extras.txt $(VENV)/.core
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements-extras.txt
	touch $@

sources: $(VENV)/.data
	bash data/install_sources.sh $(PYTHON)

# VOCAB=8192: the same texts and splits with an 8192-token tokenizer of their own (embedded_mix_sp8192)
data: sources
	$(PYTHON) -m data.build $(if $(VOCAB),--vocab-size $(VOCAB))

# The difficulty index of the embedded corpus at configs/cpu.env's row length: every signal, then
# proxy_loss (a reference model trained on a held-out slice; about 3 min on 2 cores)
index: data setup
	$(PYTHON) -m tools.envfile configs/cpu.env $(PYTHON) -m curriculum.index_build
	$(PYTHON) -m tools.envfile configs/cpu.env $(PYTHON) -m tools.proxy_loss

# The main job: train with the curriculum on the embedded default (tools/run.sh picks the
# GPUs with the trainer's H100 defaults, or configs/cpu.env on a CPU).
run: data setup
	bash tools/run.sh $(PYTHON)

test:
	$(MAKE) --no-print-directory -j2 data extras
	$(PYTHON) -m pytest -q -n auto --dist loadgroup --durations=15

bench: data setup
	$(PYTHON) -m tools.bench

# Only the curriculum's cost in separate trainer processes, with its decomposition (section 7)
bench-cost: data setup
	$(PYTHON) -m tools.bench --cost-only

compare: data extras
	$(PYTHON) -m tools.experiment --arms $(ARMS) --seeds $(SEEDS) --mode $(MODE) --budget $(BUDGET) --steps $(STEPS)

clean:
	rm -rf logs compare_out .pytest_cache data/datasets data/tokenizers
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
