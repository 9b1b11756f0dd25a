# Two entry points of the quick start: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_EVALUATE_OFFLINE=1

.PHONY: install demo test docs lint clean gpu-wheels

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,lm]"
	touch $(STAMP)

install: $(STAMP)

# The embedded default: warm vs cold on scikit-learn's digits, 5 data-incremental phases.
demo: $(STAMP)
	$(OFFLINE) $(PY) scripts/train_incremental.py recipes/digits.yaml

test: $(STAMP)
	$(OFFLINE) $(PY) -m ruff check warmstart_hf scripts tests
	$(OFFLINE) $(PY) -m pytest -q --durations=15
	$(MAKE) docs

# The manual (docs/, mkdocs.yml) into the git-ignored site/; --strict fails on a broken link or a missing page.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

clean:
	rm -rf runs site .pytest_cache

# Wheels for a GPU machine that has torch, accelerate, timm and peft but not the rest (see
# docs/performance.md): the versions this venv runs, for CPython 3.12 on x86-64, into .whl/ (git-ignored).
GPU_WHEELS := datasets dill multiprocess evaluate transformers huggingface_hub fsspec
gpu-wheels: $(STAMP)
	mkdir -p .whl
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
	  $$($(PY) -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" $(GPU_WHEELS))
	ls .whl
