VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test run lint bench bench-full clean fuzz

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check acwd tests benchmarks
	$(VENV)/bin/ruff format --check acwd tests benchmarks
	$(VENV)/bin/mypy --strict acwd/core

test: lint
	$(VENV)/bin/pytest --cov=acwd --cov-report=term $(PYTEST_ARGS)

run: $(STAMP)
	$(VENV)/bin/acwd serve $(ARGS)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The quick suite (under 5 minutes on 2 cores): benchmarks/results/latest.json, the PNGs and the
# table in benchmarks/README.md. bench-full runs longer for tighter intervals.
bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run --update-readme $(BENCH_ARGS)

bench-full: $(BENCH_STAMP)
	$(PY) -m benchmarks.run --full --update-readme $(BENCH_ARGS)

# A long fuzz run against the decoder and a live daemon; figures in benchmarks/results/fuzz.json.
fuzz: $(STAMP)
	$(PY) benchmarks/fuzz.py $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
