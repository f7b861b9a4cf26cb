# Two commands do all the set-up: `make demo` and `make test` (each creates .venv on first use).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test bench screenshots lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*; touch $@

demo: $(STAMP)
	$(BIN)/rigdeck demo

# GUI tests run in their own pytest process: the qasync loop they install must not meet the
# asyncio.run() loops of the core and transport tests.
test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q --ignore=tests/gui
	if ls tests/gui/test_*.py >/dev/null 2>&1; then QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q tests/gui; fi

bench: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python tests/benchmarks/run_all.py

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python tests/gui/make_screenshots.py

lint: $(STAMP)
	$(BIN)/ruff check app core transports tests

clean:
	rm -rf $(VENV) build *.egg-info
