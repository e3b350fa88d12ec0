# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fedge-installed
# A device-like install beside it: Python 3.10 (JetPack 6's) with the edge dependencies only (no torch, no flwr),
# at the oldest ONNX Runtime fedge supports (1.17, built against NumPy 1.x: numpy<2). .venv has the newest; the
# edge tests serve from both, where this machine has a Python 3.10.
DEVICE_VENV := .venv-device
DEVICE_STAMP := $(DEVICE_VENV)/.fedge-installed
DEVICE_PYTHON ?= $(shell for p in "$$(command -v python3.10)" "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.10*/bin/python3.10 \
	/usr/bin/python3.10 /usr/local/bin/python3.10; do "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 10)' \
	2>/dev/null && echo "$$p" && break; done)

.PHONY: demo demo-loop test check bench install device-install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned here: an unpinned torch pulls gigabytes of CUDA wheels.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

$(DEVICE_STAMP): pyproject.toml
	test -x $(DEVICE_VENV)/bin/python || $(DEVICE_PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEVICE_VENV)/bin/python -m pip install -q -e ".[edge]" "onnxruntime==1.17.3" "numpy<2"
	# text releases tokenize on the device; tokenizers' hub-client dependencies (~45 MB) are not needed there
	$(DEVICE_VENV)/bin/python -m pip install -q --no-deps "tokenizers==0.23.3"
	touch $(DEVICE_STAMP)

ifeq ($(DEVICE_PYTHON),)
device-install:
	@echo "no Python 3.10 on this machine: the edge tests' device variant (.venv-device) will be skipped"
else
device-install: $(DEVICE_STAMP)
endif

demo: $(STAMP)
	$(BIN)/fedge demo

demo-loop: $(STAMP)
	$(BIN)/fedge demo --task loop --out demo-loop-out

# Formatter, linter and type checker (rules and levels: pyproject.toml's [tool.ruff] and [tool.mypy])
check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python tools/typecheck.py

test: $(STAMP) device-install check
	FEDGE_REQUIRE_DEVICE_PYTHON=$(if $(DEVICE_PYTHON),1,) $(BIN)/python -m pytest -q -ra --durations=12

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(DEVICE_VENV) demo-out
