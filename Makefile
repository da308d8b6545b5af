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
# EVIDENCE=1 writes the committed evidence under results/ (developers); without it a run writes runs/results/.
EVIDENCE ?=
# ALL=1: every experiment of the paper instead of the headline ones its expected.yaml names.
ALL ?=
# NO_JAVA=1: make venv does not install a Java runtime (only the caption metrics need one).
NO_JAVA ?=

# Data root: the shared copies beside the checkout when they exist, else the user's cache (repro/data).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)),)
export REPRO_DATA ?= $(SHARED_DATA)
endif

.PHONY: venv reproduce test check regress leaderboard bench lint lock clean-runs

venv: $(VENV)/.installed

# The environment comes from the one lock for the whole suite; re-made when the lock changes.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
# The caption metrics (Show, Attend and Tell; Scheduled Sampling) run Java for the PTB tokenizer and METEOR:
# without java, install a JRE where apt-get may run as root (saying so first), else warn; NO_JAVA=1 opts out
# (the rest of the suite does not need Java). The venv never fails over it.
	@command -v java >/dev/null 2>&1 || { \
		if [ -n "$(NO_JAVA)" ]; then sudo=no; \
		elif [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=no; fi; \
		if [ "$$sudo" != no ] && command -v apt-get >/dev/null 2>&1; then \
			echo "Installing a Java runtime (apt-get install default-jre-headless) for the caption metrics;" \
				"make venv NO_JAVA=1 skips this"; \
			apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq"; \
			{ $$apt install -y default-jre-headless || { $$apt update && $$apt install -y default-jre-headless; }; } \
				>/dev/null 2>&1; \
		fi; \
		command -v java >/dev/null 2>&1 || echo "warning: no java: the caption metrics of Show, Attend and Tell" \
			"and Scheduled Sampling need it; install a JRE (apt-get install default-jre-headless," \
			"brew install openjdk, or conda install -c conda-forge openjdk)" >&2; \
	}
	touch $@

reproduce: venv
	$(REPRO) reproduce $(PAPER) --tier $(TIER) --seeds $(SEEDS) \
		$(foreach e,$(EXPERIMENT),--experiment $(e)) \
		$(if $(DEVICES),--devices $(DEVICES)) $(if $(ACCELERATOR),--accelerator $(ACCELERATOR)) \
		$(if $(JOBS),--jobs $(JOBS)) $(if $(RESUME),--resume) $(if $(EVIDENCE),--evidence) $(if $(ALL),--all)

# pytest exits 5 when it collected nothing: say so and fail rather than pass green on no tests.
test: venv
	WANDB_MODE=disabled $(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

check: venv
	$(REPRO) check

# check re-judges the committed records; regress re-trains the few cheap seeds each expected.yaml names under
# replay: and fails when the code no longer gives their metrics bit for bit (minutes, one thread).
regress: venv
	$(REPRO) replay

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
