# One file for the everyday tasks. `make demo` and `make test` install everything they need first.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL  ?=
DEMO   := IMGSEARCH_HOME=.demo-home $(if $(MODEL),IMGSEARCH_MODEL=$(MODEL))

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,ray,hf]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## index sample_photos/ and answer a query (MODEL=local-dir:FOLDER to use a local model)
	$(DEMO) $(BIN)/imgsearch index sample_photos
	$(DEMO) $(BIN)/imgsearch query "a cat" --top 5

test: install lint  ## lint, type-check and run the whole test suite
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install  ## every speed and memory target, measured in one run (random weights) into BENCHMARKS.md
	$(BIN)/python bench/harness.py

clean:
	rm -rf $(VENV) .demo-home .pytest_cache .mypy_cache .ruff_cache
