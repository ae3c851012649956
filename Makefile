VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test run lint bench clean

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
