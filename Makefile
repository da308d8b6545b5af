# The project's verbs. `make reproduce PAPER=stack_rnn` and `make test` are the two commands in README.md.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
REPRO := $(BIN)/repro

PAPER ?= stack_rnn
TIER ?= cpu
SEEDS ?= 3
EXPERIMENT ?=
DEVICES ?=
ACCELERATOR ?=
RESUME ?=
JOBS ?=

# Data root: the shared copies beside the checkout when they exist, else the user's cache (repro/data).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
export REPRO_DATA ?= $(SHARED_DATA)
endif

.PHONY: venv reproduce test check leaderboard bench lint lock clean-runs

venv: $(VENV)/.installed

# The environment comes from the one lock for the whole suite; re-made when the lock changes.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

reproduce: venv
	$(REPRO) reproduce $(PAPER) --tier $(TIER) --seeds $(SEEDS) \
		$(foreach e,$(EXPERIMENT),--experiment $(e)) \
		$(if $(DEVICES),--devices $(DEVICES)) $(if $(ACCELERATOR),--accelerator $(ACCELERATOR)) \
		$(if $(JOBS),--jobs $(JOBS)) $(if $(RESUME),--resume)

# pytest exits 5 when it collected nothing: say so and fail rather than pass green on no tests.
test: venv
	WANDB_MODE=disabled $(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

check: venv
	$(REPRO) check

leaderboard: venv
	$(REPRO) leaderboard

bench: venv
	$(REPRO) bench

lint: venv
	$(BIN)/ruff check .

# Re-pin every package after changing a version in pyproject.toml.
lock: venv
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock

clean-runs:
	rm -rf runs
