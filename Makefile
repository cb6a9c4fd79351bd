# The README's commands. Everything runs inside a project-local virtualenv (.venv) that the first
# target creates, so a fresh clone needs only python3 (>= 3.10) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_TARGETS ?= syn-Scientific,syn-Pantry,syn-Instruments,syn-Arts,syn-Office
# accelerate launch runs a single process with OMP_NUM_THREADS=1 unless told otherwise: give the
# demo's pretraining every core (on the 2-core CPU one thread makes it 1.6x slower).
THREADS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: install test demo bench check-readme clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/mmseqrec prepare synthetic
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no --num_cpu_threads_per_process $(THREADS) pretrain/run.py --quiet
	$(BIN)/finetune --domain $(DEMO_TARGETS) --model missrec,missrec@scratch,sasrec,mostpop --quiet --output checkpoints/demo

# Speed and memory on synthetic data at the real datasets' sizes; BENCH="--scales scientific,office" (or
# "--scales fhckm --parts load,train", ...) for the full measurements. Results in checkpoints/bench/.
BENCH ?= --quick
bench: $(STAMP)
	$(BIN)/mmseqrec bench $(BENCH)

# The README's quick start and synthetic examples, run as shown in a fresh clone of HEAD.
check-readme:
	scripts/check_readme_quickstart.sh

clean-venv:
	rm -rf $(VENV)
