# Two commands set up everything on a fresh machine:
#   make run    build the venv if missing, then start the server (data in ./data, 127.0.0.1:50051)
#   make test   build the venv if missing, then run the test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache
export NUMBA_NUM_THREADS ?= 2

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/vecdb serve --data ./data --host 127.0.0.1 --port 50051

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/vecdb bench --dataset digits-64-euclidean --targets vecdb-flat,faiss-flat --threads 1,2

clean:
	rm -rf $(VENV) .numba_cache
