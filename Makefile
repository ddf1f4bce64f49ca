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
	$(BIN)/python -m pip install --quiet -e '.[test,bench,cluster,langchain,llamaindex]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/vecdb serve --data ./data --host 127.0.0.1 --port 50051

# two pytest-xdist workers (one per core; a file's tests stay in one worker, and all Ray tests
# in one: tests/conftest.py); a cold run is mostly Numba compiling, which runs on one core
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

BENCH_OUT := bench/results/make-bench
# a small real run (digits-64-euclidean, about a minute): vecdb's HNSW / PQ / binary vs faiss and
# hnswlib, then the recall-vs-QPS Pareto plot $(BENCH_OUT).png and the best-QPS report
bench: $(STAMP)
	rm -rf $(BENCH_OUT).jsonl $(BENCH_OUT).raw
	$(BIN)/vecdb bench run --dataset digits-64-euclidean \
	  --targets vecdb-flat,vecdb-hnsw,vecdb-pq,vecdb-binary,faiss-hnsw,hnswlib \
	  --build "M=8;ef_construction=40;m=8" --search "ef=10,16,24,40,80;rerank=0,10,20,50,100" \
	  --k 10 --repeats 3 --allow-busy --no-progress --output $(BENCH_OUT).jsonl
	$(BIN)/vecdb bench plot $(BENCH_OUT).jsonl -o $(BENCH_OUT).png
	$(BIN)/vecdb bench report $(BENCH_OUT).jsonl --baseline faiss-hnsw

clean:
	rm -rf $(VENV) .numba_cache
