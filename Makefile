# Two entry points of the quick start: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The embedded default: warm vs cold on scikit-learn's digits, 5 data-incremental phases.
demo: $(STAMP)
	$(OFFLINE) $(PY) scripts/train_incremental.py recipes/digits.yaml

test: $(STAMP)
	$(OFFLINE) $(PY) -m ruff check warmstart_hf scripts tests
	$(OFFLINE) $(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
