# The two commands: `make run` and `make test`. Each builds .venv from nothing
# (Python 3.11, pip and gcc are all it assumes) and is safe to repeat.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test test-fast venv clean

$(STAMP): pyproject.toml setup.py $(wildcard ext/*.pyx)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## run: the default simulated closed-loop arm session (center-out, 192 channels)
run: $(STAMP)
	$(VENV)/bin/bciarm run arm_center_out --seed 0 $(ARGS)

## test: the whole suite, slow end-to-end tests included
test: $(STAMP)
	$(PY) -m pytest $(ARGS)

## test-fast: everything but the slow end-to-end tests
test-fast: $(STAMP)
	$(PY) -m pytest -m 'not slow' $(ARGS)

clean:
	rm -rf build dist *.egg-info bciarm/decoders/_kalman*.so ext/*.c
