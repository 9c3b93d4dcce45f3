# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The demo's UI port: `make demo PORT=3001` when 3000 is taken.
PORT ?= 3000

.PHONY: demo test install lint bench faults

$(BIN)/b1twilio: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,demo]"
	touch $(BIN)/b1twilio

install: $(BIN)/b1twilio

demo: install
	$(BIN)/b1twilio demo --port $(PORT)

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .

faults: install
	B1TWILIO_FAULTS=full $(BIN)/pytest -m faults -s

bench: install
	$(BIN)/pytest -m bench
	$(BIN)/python -m benchmarks
