"""SPANN benchmark: recall@k against latency (one query per call, mean and p99), postings and
bytes read per query, resident memory and build time, in the same run as our HNSW, faiss
IndexIVFFlat (its inverted lists moved to an OnDiskInvertedLists file when faiss can) and
DiskANN (diskannpy 0.7.0 in its own venv, bench/diskann-venv.sh, run as a subprocess with
the same resident budget: ``--targets ...,diskann``).

SPANN keeps its postings in an LMDB environment under ``--workdir``; with ``--cold`` that
file is evicted from the page cache (posix_fadvise DONTNEED) before a second pass of every
sweep point, so its reads come from the disk. Latency is measured at one thread (Numba and
BLAS) unless ``--threads`` says otherwise. ``--spann-params '{"codes": "sq8"}'`` measures SQ8
postings (bytes per query then include the float vectors read to re-rank).

``--synthetic N`` (N x ``--dim`` float32, a seeded Gaussian mixture written to a file under
the workdir, its rows ordered by mixture component) builds SPANN in chunks (bounded memory)
and serves it, beside faiss's on-disk IVF, from one search process (``bench/spann_serve.py``)
whose memory is capped by a cgroup v2 ``memory.max`` (``--mem-cap-mb``) where /sys/fs/cgroup
allows creating one (otherwise it reports its RSS and the page-cache residency of the LMDB
file, mincore): both one query per call on one thread, their sweep points timed in
``--rounds`` interleaved rounds (this machine's speed drifts), each reporting its median pass.
``--ivf-reuse`` searches the faiss build a previous run saved (``ivf.index``), with its figures;
``--spann-reuse`` serves the SPANN index a previous run built with the same parameters.

    python bench/spann.py --datasets glove-6b-50d-angular,mnist-784-euclidean,arxiv-minilm-384 --cold
    python bench/spann.py --datasets glove-6b-50d-angular --n-base 20000 --n-queries 200   # a quick try
    python bench/spann.py --synthetic 5000000 --n-queries 200 --cold --targets spann,diskann

Probing at a smaller size with the 5M set's density: ``--synthetic 5000000 --synthetic-first
1000000`` (whole components of the 5M file; its own workdir, the data file is shared), with
``--ivf-nlist`` keeping faiss's lists the size they have at 5M (N / 559). ``--spann-eps2``
sweeps eps2 with every ``max_postings``; ``--train-sample`` sizes the training sample (default a
tenth of the data within [65,536, 500,000], for SPANN and faiss alike).
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import spann_hnsw  # bench/ (this script's folder) is on sys.path
from spann_measure import (at_recall, cached_share, eps2_list, evict, peak_rss, per_query, read_stats, read_work,
                           row)
from spann_serve import ROUNDS, search_sets, serve_capped

#: training sample (SPANN heads, faiss's coarse quantizer): the default floor and ceiling; the
#: sample is a tenth of the data between them (heads come from training, not from thousands of splits)
TRAIN_SAMPLE = 65_536
TRAIN_SAMPLE_MAX = 500_000
HERE = Path(__file__).resolve().parent
DISKANN_PYTHON = HERE / ".venv-diskann" / "bin" / "python"
#: rows per generated chunk of the synthetic set (and per SPANN add there)
SYNTH_CHUNK = 50_000
#: mixture components of the synthetic set
SYNTH_CENTRES = 2_000
#: vectors per SPANN add call (each call's rewritten postings are held until it commits)
ADD_CHUNK = 100_000


def load(name: str, n_base: int | None, n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """Base (optionally its first ``n_base`` rows), queries, metric and exact top-k ids."""
    from vecdb.data import load_dataset
    from vecdb.index import FlatIndex

    ds = load_dataset(name)
    metric = "l2" if ds.metric.value == "l2" else "cosine"
    base = np.ascontiguousarray(ds.base[:n_base] if n_base else ds.base, np.float32)
    queries = np.ascontiguousarray(ds.queries[:n_queries], np.float32)
    if ds.gt_ids is not None and not n_base and ds.gt_ids.shape[1] >= k:
        gt = np.asarray(ds.gt_ids[:n_queries, :k])
    else:
        flat = FlatIndex(base.shape[1], metric)
        flat.add(base)
        gt = flat.search(queries, k).ids
    return base, queries, metric, gt


def train_size(n: int, requested: int | None) -> int:
    """Rows of the training sample for ``n`` rows: ``requested``, or n / 10 within
    [TRAIN_SAMPLE, TRAIN_SAMPLE_MAX] (never more than n)."""
    size = requested if requested else min(max(n // 10, TRAIN_SAMPLE), TRAIN_SAMPLE_MAX)
    return int(min(n, size))


def bench_spann(base: np.ndarray, queries: np.ndarray, metric: str, gt: np.ndarray, k: int, workdir: Path,
                sweep: list[int], cold: bool, params: dict[str, Any], eps2s: list[float | None] | None = None,
                train: int | None = None, searches: list[dict[str, Any]] | None = None
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build SPANN over ``base`` and sweep max_postings (with each eps2 of ``eps2s`` and each
    set of search knobs of ``searches``, e.g. rerank), warm and (``cold``) cold."""
    from vecdb.index import SPANN

    path = workdir / "spann"
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(0)
    sample = base[np.sort(rng.choice(len(base), train_size(len(base), train), replace=False))]
    t0 = time.perf_counter()
    index = SPANN(base.shape[1], metric, path, **params)
    index.train(sample)
    for start in range(0, len(base), ADD_CHUNK):              # one commit per chunk: bounded memory
        index.add(base[start : start + ADD_CHUNK], np.arange(start, min(start + ADD_CHUNK, len(base))))
    index.wait_idle()                                          # the background splits belong to the build
    build = time.perf_counter() - t0
    sizes = index.posting_sizes()
    info = {"target": "spann", "build_s": build, "resident_bytes": index.memory_bytes(), "disk_bytes": index.disk_bytes(),
            "raw_bytes": base.nbytes, "heads": index.n_heads, "posting_mean": float(sizes.mean()),
            "posting_max": int(sizes.max()), "replication": float(sizes.sum() / len(base)), "params": index.params(),
            "splits": index.splits, "background_splits": index.background_splits, "train_sample": len(sample)}
    rows = []
    data_file = path / "data.mdb"
    for knobs, eps2, mp in [(o, e, m) for o in (searches or [{}]) for e in (eps2s or [None]) for m in sweep]:
        for mode in (["warm", "cold"] if cold else ["warm"]):
            def search(q: np.ndarray, mp: int = mp, eps2: float | None = eps2, knobs: dict[str, Any] = knobs
                       ) -> np.ndarray:
                return index.search(q, k, max_postings=mp, eps2=eps2, **knobs).ids

            cached: list[int] = []
            if mode == "cold":                    # DONTNEED skips pages this process maps: open again
                index.close()
                index = None
                gc.collect()                      # (a closed index in a reference cycle would keep its maps)
                index = SPANN(base.shape[1], metric, path)
                if not evict(data_file):
                    continue
            ids, secs = per_query(search, queries, evict_first=data_file if mode == "cold" else None,
                                  after_evict=lambda: cached.append(cached_share(data_file)))
            if mode == "warm":
                ids, secs = per_query(search, queries)            # the second pass: pages cached
            stats = read_work(index, queries, k, mp, eps2, **knobs)
            rows.append(row("spann", "max_postings", mp, ids, secs, gt, cache=mode, eps2=eps2, **read_stats(stats, mp),
                            **({"search": knobs} if knobs else {}),
                            **({"cached_share_at_start": cached[0]} if cached else {})))
    index.close()
    return info, rows


#: share of a file still cached when its cold pass starts past which the pass is flagged
COLD_CACHED_MAX = 0.05


def bench_hnsw(base: np.ndarray, queries: np.ndarray, metric: str, gt: np.ndarray, k: int,
               sweep: list[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from vecdb.index import HNSW

    t0 = time.perf_counter()
    index = HNSW(base.shape[1], metric, M=16, ef_construction=200, progress=False)
    index.add(base)
    info = {"target": "hnsw", "build_s": time.perf_counter() - t0, "resident_bytes": index.memory_bytes(),
            "raw_bytes": base.nbytes}
    rows = []
    for ef in sweep:
        ids, secs = per_query(lambda q, ef=ef: index.search(q, k, ef=max(ef, k)).ids, queries)
        rows.append(row("hnsw", "ef", ef, ids, secs, gt, cache="memory"))
    return info, rows


def build_ivf(base: np.ndarray, metric: str, workdir: Path, nlist: int | None = None, train: int | None = None,
              reuse: bool = False) -> tuple[dict[str, Any], Any]:
    """faiss IndexIVFFlat over ``base``, its lists moved to an OnDiskInvertedLists file
    (``workdir/ivf.ivfdata``, the index itself ``ivf.index``) when faiss can: (build info,
    index). ``reuse`` opens the pair a previous run saved, with that build's info
    (``ivf.build.json``)."""
    import faiss

    from vecdb.kernels.distances import normalize_rows

    saved, record = workdir / "ivf.index", workdir / "ivf.build.json"
    if reuse:
        if not (saved.exists() and record.exists()):
            raise SystemExit(f"no saved faiss build in {workdir} (ivf.index + ivf.build.json): run without --ivf-reuse")
        info = json.loads(record.read_text())
        if info.get("n") != len(base):
            raise SystemExit(f"{saved} holds {info.get('n')} rows, not {len(base)}")
        return {**info, "reused_build": True}, faiss.read_index(str(saved))
    xb = normalize_rows(base) if metric == "cosine" else base
    fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    nlist = nlist or max(16, int(4 * np.sqrt(len(xb))))
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatL2(xb.shape[1]) if metric == "l2" else faiss.IndexFlatIP(xb.shape[1])
    index = faiss.IndexIVFFlat(quantizer, xb.shape[1], nlist, fmetric)
    rng = np.random.default_rng(0)
    index.train(np.ascontiguousarray(xb[np.sort(rng.choice(len(xb), train_size(len(xb), train), replace=False))]))
    for start in range(0, len(xb), ADD_CHUNK):               # a memmap (the synthetic set): chunk by chunk
        index.add(np.ascontiguousarray(xb[start : start + ADD_CHUNK], np.float32))
    on_disk = False
    try:                                          # faiss's own on-disk inverted lists
        from faiss.contrib.ondisk import merge_ondisk

        shard = workdir / "ivf.shard"
        faiss.write_index(index, str(shard))
        empty = faiss.clone_index(index)          # trained quantizer, no lists
        empty.reset()
        merge_ondisk(empty, [str(shard)], str((workdir / "ivf.ivfdata").resolve()))
        index, on_disk = empty, True
        shard.unlink()
    except Exception as exc:  # noqa: BLE001 (reported in the output: the in-memory lists are measured)
        print(f"  faiss on-disk lists unavailable ({type(exc).__name__}: {exc}); measuring in-memory IVF", file=sys.stderr)
    info = {"target": "faiss-ivfflat", "n": len(xb), "build_s": time.perf_counter() - t0, "nlist": nlist,
            "on_disk": on_disk, "raw_bytes": int(base.nbytes),
            "resident_bytes": int(nlist * xb.shape[1] * 4) if on_disk else None}
    if on_disk:
        faiss.write_index(index, str(saved))
        record.write_text(json.dumps(info))
    return info, index


def bench_ivf(base: np.ndarray, queries: np.ndarray, metric: str, gt: np.ndarray, k: int, workdir: Path,
              sweep: list[int], cold: bool, nlist: int | None = None, train: int | None = None,
              reuse: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``build_ivf``, then its sweep in this process (the real datasets; the synthetic run
    serves it beside SPANN, ``spann_serve``)."""
    import faiss

    from vecdb.kernels.distances import normalize_rows

    info, index = build_ivf(base, metric, workdir, nlist, train, reuse)
    lists = faiss.downcast_InvertedLists(index.invlists)
    if hasattr(lists, "prefetch_nthread"):      # one thread, as spann_serve.ivf_searches
        lists.prefetch_nthread = 0
    xq = normalize_rows(queries) if metric == "cosine" else queries
    lists_file = workdir / "ivf.ivfdata"
    rows = []
    for nprobe in sweep:
        index.nprobe = nprobe
        for mode in (["warm", "cold"] if cold and info["on_disk"] else ["warm"]):
            cached: list[int] = []
            if mode == "cold":                    # DONTNEED skips pages this process maps: read again
                index = lists = None
                gc.collect()
                index = faiss.read_index(str(workdir / "ivf.index"))
                lists = faiss.downcast_InvertedLists(index.invlists)
                if hasattr(lists, "prefetch_nthread"):
                    lists.prefetch_nthread = 0
                index.nprobe = nprobe
            ids, secs = per_query(lambda q: index.search(q, k)[1], xq,
                                  evict_first=lists_file if mode == "cold" else None,
                                  after_evict=lambda: cached.append(cached_share(lists_file)))
            if mode == "warm":
                ids, secs = per_query(lambda q: index.search(q, k)[1], xq)
            rows.append(row("faiss-ivfflat", "nprobe", nprobe, ids, secs, gt, cache=mode,
                            **({"cached_share_at_start": cached[0]} if cached else {})))
    return info, rows


def bench_diskann(base: np.ndarray, queries: np.ndarray, metric: str, gt: np.ndarray, k: int, workdir: Path,
                  sweep: list[int], cold: bool, budget_bytes: int, threads: int,
                  build_gb: float = 1.0, reuse: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """DiskANN in its own venv (a subprocess): disk index built with ``search_memory_maximum``
    = ``budget_bytes`` (and ``build_memory_maximum`` = ``build_gb``), searched one query per
    call with StaticDiskIndex(num_threads=2). ``reuse`` searches the index a previous run (or
    ``diskann_run.py --build-only``) left in ``workdir/diskann/index``, reporting that build's figures."""
    if not DISKANN_PYTHON.exists():
        raise SystemExit(f"{DISKANN_PYTHON} missing: run bash bench/diskann-venv.sh first")
    folder = workdir / "diskann"
    if not reuse:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, arr in (("queries", queries), ("gt", gt)):
        files[name] = folder.parent / f"diskann-{name}.npy"
        np.save(files[name], np.ascontiguousarray(arr))
    if isinstance(base, np.memmap) and base.filename is not None:   # the synthetic set: its raw file
        base_args = ["--base", str(base.filename), "--dim", str(base.shape[1])]
    else:
        files["base"] = folder.parent / "diskann-base.npy"
        np.save(files["base"], np.ascontiguousarray(base, np.float32))
        base_args = ["--base", str(files["base"])]
    cmd = [str(DISKANN_PYTHON), str(HERE / "diskann_run.py"), *base_args, "--queries", str(files["queries"]),
           "--gt", str(files["gt"]), "--metric", metric, "--budget-gb", f"{budget_bytes / 2**30:.6f}",
           "--build-threads", str(max(threads, 2)), "--build-gb", str(build_gb), "--workdir", str(folder / "index"),
           "--sweep", ",".join(map(str, sweep)), "--k", str(k), "--out", str(folder / "result.json")]
    cmd += ["--cold"] if cold else []
    cmd += ["--reuse"] if reuse else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"diskann_run failed ({done.returncode}): {done.stderr[-2000:]} {done.stdout[-2000:]}")
    out = json.loads((folder / "result.json").read_text())
    out["info"]["raw_bytes"] = int(base.nbytes)
    return out["info"], out["rows"]


# ---- the synthetic larger-than-RAM set -------------------------------------------------------
def synthetic(n: int, dim: int, n_queries: int, k: int, folder: Path,
              first: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded Gaussian mixture of ``n`` x ``dim`` float32 rows written chunk by chunk to
    ``folder/base.f32`` (returned as a read-only memmap), its rows grouped by component (so a
    chunk added to SPANN touches few postings); queries drawn from the same mixture; exact
    top-k ids computed in one streaming pass (bounded memory). ``first``: only the file's first
    rows (whole components at the full set's density), queries drawn from their components."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"base-{n}x{dim}.f32"
    centres = np.random.default_rng(7).standard_normal((SYNTH_CENTRES, dim)).astype(np.float32) * 3
    order = np.sort(np.random.default_rng(8).integers(0, SYNTH_CENTRES, n))   # component of each row, grouped
    used = min(n, first) if first else n
    comps = np.unique(order[:used]) if used < n else np.arange(SYNTH_CENTRES)
    queries = (centres[comps[np.random.default_rng(9).integers(0, len(comps), n_queries)]]
               + np.random.default_rng(10).standard_normal((n_queries, dim)).astype(np.float32))
    best_d = np.full((n_queries, k), np.inf, np.float32)
    best_i = np.full((n_queries, k), -1, np.int64)
    fresh = not path.exists() or path.stat().st_size != n * dim * 4
    out = np.memmap(path, np.float32, "w+" if fresh else "r", shape=(n, dim))
    qn = (queries * queries).sum(1)
    for start in range(0, n if fresh else used, SYNTH_CHUNK):
        stop = min(start + SYNTH_CHUNK, n)
        if fresh:
            rng = np.random.default_rng([11, start])
            out[start:stop] = centres[order[start:stop]] + rng.standard_normal((stop - start, dim)).astype(np.float32)
        if start >= used:                        # generated for the file, not part of the set
            continue
        stop = min(stop, used)
        chunk = np.asarray(out[start:stop])
        d = qn[:, None] - 2 * (queries @ chunk.T) + (chunk * chunk).sum(1)[None, :]
        cand = np.argpartition(d, min(k, d.shape[1] - 1), axis=1)[:, :k]
        all_d = np.concatenate([best_d, np.take_along_axis(d, cand, 1)], 1)
        all_i = np.concatenate([best_i, cand + start], 1)
        top = np.argsort(all_d, 1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(all_d, top, 1), np.take_along_axis(all_i, top, 1)
    if fresh:
        out.flush()
    del out
    return np.memmap(path, np.float32, "r", shape=(n, dim))[:used], queries, best_i


def build_spann_chunked(base: np.ndarray, metric: str, path: Path, params: dict[str, Any],
                        train: int | None = None, reuse: bool = False) -> dict[str, Any]:
    """SPANN built from ``base`` (a memmap) in chunks of ``SYNTH_CHUNK`` rows: one commit
    each, memory bounded by a chunk and the postings it touches; its build info is saved
    beside it (``spann.build.json``). ``reuse`` serves the index a previous run built there
    with the same parameters and rows (its info then names the commit that built it)."""
    from vecdb.bench.machine import provenance
    from vecdb.index import SPANN

    record = path.parent / "spann.build.json"
    wanted = {"n": len(base), "requested": params, "train": train}
    if reuse:
        saved = json.loads(record.read_text()) if record.exists() and path.exists() else None
        if saved is None or saved.get("build") != wanted:
            raise SystemExit(f"no saved SPANN build in {path} for {wanted} (see {record}): run without --spann-reuse")
        return {**saved["info"], "reused_build": True, "built_by_commit": saved.get("commit")}
    record.unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    sample = np.asarray(base[np.sort(rng.choice(len(base), train_size(len(base), train), replace=False))])
    shutil.rmtree(path, ignore_errors=True)                   # a fresh build (the data file is kept)
    t0 = time.perf_counter()
    index = SPANN(base.shape[1], metric, path, **params)
    index.train(sample)
    train_s, trained_heads = time.perf_counter() - t0, index.n_heads
    for start in range(0, len(base), SYNTH_CHUNK):
        stop = min(start + SYNTH_CHUNK, len(base))
        index.add(np.asarray(base[start:stop]), np.arange(start, stop))
    index.wait_idle()
    sizes = index.posting_sizes()
    info = {"target": "spann", "build_s": time.perf_counter() - t0, "resident_bytes": index.memory_bytes(),
            "disk_bytes": index.disk_bytes(), "raw_bytes": int(base.nbytes), "heads": index.n_heads,
            "posting_mean": float(sizes.mean()), "posting_max": int(sizes.max()),
            "replication": float(sizes.sum() / len(base)), "params": index.params(), "splits": index.splits,
            "build_peak_rss_bytes": peak_rss(), "train_sample": len(sample), "train_s": train_s,
            "trained_heads": trained_heads}
    index.close()
    record.write_text(json.dumps({"build": wanted, "info": info, "commit": provenance()["commit"]}))
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="glove-6b-50d-angular")
    ap.add_argument("--n-base", type=int, default=None, help="first rows of the base only (exact ground truth recomputed)")
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--spann-sweep", default="8,16,32,64,128", help="max_postings values")
    ap.add_argument("--hnsw-sweep", default="16,32,64,128,256", help="ef values")
    ap.add_argument("--ivf-sweep", default="4,8,16,32,64", help="nprobe values")
    ap.add_argument("--spann-params", default="{}", help="JSON of SPANN construction parameters")
    ap.add_argument("--spann-eps2", default="", help="eps2 values swept with every max_postings (default: the index's)")
    ap.add_argument("--spann-search", default="{}",
                    help="JSON of SPANN search knobs for every sweep point (e.g. '{\"rerank\": 20}'), "
                         "or a list of such objects, each swept (e.g. '[{\"rerank\": 10}, {\"rerank\": 20}]')")
    ap.add_argument("--train-sample", type=int, default=None,
                    help=f"training rows (default: a tenth of the data within [{TRAIN_SAMPLE}, {TRAIN_SAMPLE_MAX}])")
    ap.add_argument("--ivf-nlist", type=int, default=None, help="faiss IVF lists (default 4 * sqrt(N))")
    ap.add_argument("--synthetic-first", type=int, default=None,
                    help="only the first rows of the --synthetic file (whole components at its density)")
    ap.add_argument("--targets", default="spann,hnsw,faiss-ivfflat")
    ap.add_argument("--cold", action="store_true", help="also measure with the data files evicted from the page cache")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="where indexes are written (default: a temporary directory)")
    ap.add_argument("--out", default="bench/results/spann.json")
    ap.add_argument("--allow-busy", action="store_true", help="run on a busy machine (the result is flagged busy)")
    ap.add_argument("--diskann-sweep", default="10,20,40,80,160", help="DiskANN search list sizes")
    ap.add_argument("--budget", type=float, default=0.10,
                    help="DiskANN's resident budget as a fraction of the raw vectors (search_memory_maximum)")
    ap.add_argument("--diskann-build-gb", type=float, default=1.0,
                    help="DiskANN's build_memory_maximum (GB; below the data size it builds in merged shards)")
    ap.add_argument("--diskann-reuse", action="store_true",
                    help="search the DiskANN index already built under the workdir (diskann_run.py --build-only)")
    ap.add_argument("--synthetic", type=int, default=None, help="N: the synthetic N x --dim set instead of --datasets")
    ap.add_argument("--dim", type=int, default=128, help="dimension of the synthetic set")
    ap.add_argument("--mem-cap-mb", type=int, default=1024, help="memory.max of the synthetic run's search process")
    ap.add_argument("--rounds", type=int, default=ROUNDS,
                    help="synthetic run: timed rounds of SPANN's and faiss's sweep points, interleaved")
    ap.add_argument("--ivf-reuse", action="store_true",
                    help="search the faiss IVF a previous run saved under the workdir (ivf.index, ivf.build.json)")
    ap.add_argument("--spann-reuse", action="store_true",
                    help="synthetic run: serve the SPANN index a previous run built under the workdir with the same "
                         "--spann-params, rows and --train-sample (spann.build.json), instead of building it again")
    args = ap.parse_args(argv)

    from vecdb.bench.machine import run_recorded
    from vecdb.kernels._jit import threads

    run_recorded(lambda: _run(args, threads), args.allow_busy, Path(args.out), argv)
    return 0


def _run(args: argparse.Namespace, threads: Callable[[int], Any]) -> dict[str, Any]:
    """Every dataset of ``args``: builds, sweeps, the printed table; the record to save."""

    targets = set(args.targets.split(","))
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    results: dict[str, Any] = {"argv": sys.argv, "datasets": {}}
    work_root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="vecdb-spann-bench-"))
    try:
        data_name = f"synthetic-{args.synthetic}-{args.dim}"
        first = f"-first{args.synthetic_first}" if args.synthetic and args.synthetic_first else ""
        names = [data_name + first] if args.synthetic else args.datasets.split(",")
        for name in names:
            work = work_root / name
            work.mkdir(parents=True, exist_ok=True)
            if args.synthetic:
                base, queries, gt = synthetic(args.synthetic, args.dim, args.n_queries, args.k, work_root / data_name,
                                              args.synthetic_first)
                metric = "l2"
            else:
                base, queries, metric, gt = load(name, args.n_base, args.n_queries, args.k)
            print(f"{name}: {base.shape[0]} x {base.shape[1]} {metric}, {len(queries)} queries, k={args.k}")
            infos, rows = [], []
            if "faiss-ivfflat" in targets:
                import faiss  # noqa: F401  (loaded before ``threads``, which then limits its OpenMP too)
            with threads(args.threads):
                if args.synthetic and targets & {"spann", "faiss-ivfflat"}:   # served side by side, capped
                    spann_path = ivf_path = None
                    if "spann" in targets:
                        spann_info = build_spann_chunked(base, metric, work / "spann", json.loads(args.spann_params),
                                                         args.train_sample, args.spann_reuse)
                        spann_path = work / "spann"
                    if "faiss-ivfflat" in targets:
                        ivf_info, ivf_index = build_ivf(base, metric, work, args.ivf_nlist, args.train_sample,
                                                        args.ivf_reuse)
                        del ivf_index                # searched by the capped process, from its files
                        ivf_path = work / "ivf.index"
                    served, got = serve_capped(spann_path, ivf_path, queries, gt, metric, args, work)
                    if spann_path is not None:
                        infos.append({**spann_info, **served})
                    if ivf_path is not None:
                        infos.append({**ivf_info, "memory_cap": served["memory_cap"]})
                    rows += got
                elif "spann" in targets:
                    info, got = bench_spann(base, queries, metric, gt, args.k, work, ints(args.spann_sweep), args.cold,
                                            json.loads(args.spann_params), eps2_list(args.spann_eps2), args.train_sample,
                                            search_sets(args.spann_search))
                    infos.append(info)
                    rows += got
                if "hnsw" in targets:   # on the synthetic set: the index bench/spann_hnsw.py built and saved
                    info, got = (spann_hnsw.search_saved(base, queries, gt, args.k, work / "hnsw", ints(args.hnsw_sweep),
                                                         per_query, row) if args.synthetic else
                                 bench_hnsw(base, queries, metric, gt, args.k, ints(args.hnsw_sweep)))
                    infos.append(info)
                    rows += got
                if "faiss-ivfflat" in targets and not args.synthetic:
                    info, got = bench_ivf(base, queries, metric, gt, args.k, work, ints(args.ivf_sweep), args.cold,
                                          args.ivf_nlist, args.train_sample, args.ivf_reuse)
                    infos.append(info)
                    rows += got
                if "diskann" in targets:
                    info, got = bench_diskann(base, queries, metric, gt, args.k, work, ints(args.diskann_sweep), args.cold,
                                              int(args.budget * base.nbytes), args.threads, args.diskann_build_gb,
                                              args.diskann_reuse)
                    infos.append(info)
                    rows += got
            for info in infos:
                shown = {k: v for k, v in info.items() if k != "params"}
                print("  " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
            print(f"  {'target':14} {'knob':>14} {'cache':>6} {'recall':>7} {'mean ms':>8} {'p99 ms':>8} {'qps':>8} "
                  f"{'postings/q':>10} {'pruned':>7} {'KB/q':>8}")
            for r in rows:
                knob = next(f"{n}={r[n]}" for n in ("max_postings", "ef", "nprobe", "complexity") if n in r)
                knob += f" e{r['eps2']:g}" if r.get("eps2") is not None else ""
                knob += "".join(f" {name}={value}" for name, value in r.get("search", {}).items())
                print(f"  {r['target']:14} {knob:>14} {r['cache']:>6} {r['recall']:7.3f} {r['mean_ms']:8.3f} "
                      f"{r['p99_ms']:8.3f} {r['qps']:8.0f} {r.get('postings_per_q', float('nan')):10.1f} "
                      f"{r.get('pruned_share', float('nan')):7.2f} {r.get('bytes_per_q', float('nan')) / 1024:8.1f}")
            warm_left = [r for r in rows if (r.get("cached_share_at_start") or 0) > COLD_CACHED_MAX]
            if warm_left:                         # a cold pass that did not start cold measured nothing
                print(f"  WARNING: {len(warm_left)} cold passes started with more than {COLD_CACHED_MAX:.0%} of their "
                      f"file cached (pages this process still mapped): their cold figures are not cold")
            summary = at_recall(rows)
            if summary:
                print("  QPS at recall (interpolated on each curve) and ratio to faiss-ivfflat in the same cache:")
            for a in summary:
                search = "".join(f" {n}={v}" for n, v in (a["search"] or {}).items())
                shown = "not reached" if a["qps"] is None else f"{a['qps']:8.0f}"
                ratio = "" if a["ratio"] is None else f"  {a['ratio']:.2f}x"
                print(f"  {a['target']:14}{search:>14} {a['cache']:>6} @{a['recall']:.2f} {shown}{ratio}")
            results["datasets"][name] = {"n_base": len(base), "dim": base.shape[1], "metric": metric, "builds": infos,
                                         "rows": rows, "at_recall": summary}
    finally:
        if not args.workdir:
            shutil.rmtree(work_root, ignore_errors=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
