# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: demo test test-all lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev,gguf,serve]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/leadrrg demo --out $(DEMO_OUT)

# Tests use tiny models: one intra-op thread each is fastest and avoids oversubscribing small machines.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

test-all: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts

# Speed benchmarks that finish in a few minutes on 2 CPU cores (untrained demo-preset models; pass RUN=dir for a
# trained one). Figures are printed; none of them is a test.
RUN ?=
bench: $(STAMP)
	$(PY) benchmarks/bench_serve.py $(if $(RUN),--run $(RUN))
	$(PY) benchmarks/bench_decode.py $(if $(RUN),--run $(RUN)) --repeats 3

clean:
	rm -rf $(VENV) runs .pytest_cache
