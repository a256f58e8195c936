# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-cli-test
PEER   := $(VENV)/.installed-peer
# The real corpora beside the repository, when they are there (a folder that does not exist is an error).
export RNNLAB_DATA_DIR ?= $(if $(wildcard ../shared/data/.),$(abspath ../shared/data),)

.PHONY: demo test crosscheck bench gradcheck clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cli,test]"
	touch $@

$(PEER): $(STAMP)
	$(PY) -m pip install -q -e ".[cli,test,peer]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/rnnlab demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not peer"

# Cross-checks against PyTorch autograd (installs the pinned CPU torch into .venv).
crosscheck: $(PEER)
	$(PY) -m pytest -q -m peer

gradcheck: $(STAMP)
	$(VENV)/bin/rnnlab gradcheck

bench: $(PEER)
	$(VENV)/bin/rnnlab bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
