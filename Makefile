# predsim: `make run` and `make test` set everything up in .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench fidelity install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

## Run the default comparison (scenarios/quickstart.yaml) and print the table.
run: $(STAMP)
	$(BIN)/predsim run scenarios/quickstart.yaml

## Run the whole test suite (every test that passes reliably on a clean 2-core machine; the
## real-server fidelity checks run with `make fidelity`).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not fidelity"

## Speed and memory benchmarks against their targets (numbers, not pass/fail), the simulated
## week included (about 4 minutes); writes benchmarks/results.json.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py --full

## predsim against a real model server on 127.0.0.1 (benchmarks/fidelity/): prints the error
## table (one request at a time and with dynamic batching) and writes
## benchmarks/fidelity/results.json; about 25 minutes (11 for C = 1, 11 for C = 4, then the
## real-server tests).
fidelity: $(STAMP)
	$(BIN)/python benchmarks/fidelity/fidelity.py --json benchmarks/fidelity/results.json
	$(BIN)/python -m pytest -q -m fidelity

clean:
	rm -rf $(VENV) build *.egg-info
