"""``vecdb bench plot``: recall-vs-QPS Pareto curves per target on a log QPS axis (the
ann-benchmarks picture) beside recall-vs-index-memory, from `vecdb bench run` result lines."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vecdb.bench.report import workload_label
from vecdb.errors import FailedPreconditionError, InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pareto(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[tuple[float, float]]:
    """The (recall, value) points no other point beats on both axes, by increasing recall:
    higher value is better for QPS (``higher_is_better``), lower for memory."""
    sign = 1 if higher_is_better else -1
    front: list[tuple[float, float]] = []
    best = None
    for recall, value in sorted(points, key=lambda p: (-p[0], -sign * p[1])):
        if best is None or sign * value > sign * best:
            front.append((recall, value))
            best = value
    return front[::-1]


def select(lines: list[dict[str, Any]], threads: int | None, batch: int | None,
           workload: str | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """The lines of one (threads, batch) (default: the smallest of each present) and one
    workload (default: plain k-NN when present, else the first workload of the lines)."""
    if not lines:
        raise InvalidArgumentError("no result lines to plot")
    labels = list(dict.fromkeys(workload_label(ln) for ln in lines))
    workload = workload or ("knn" if "knn" in labels else labels[0])
    if workload not in labels:
        raise InvalidArgumentError(f"no result line of workload {workload!r}; the lines hold: {labels}")
    lines = [ln for ln in lines if workload_label(ln) == workload]
    threads = min(ln["threads"] for ln in lines) if threads is None else threads
    batch = min(ln["batch"] for ln in lines) if batch is None else batch
    chosen = [ln for ln in lines if ln["threads"] == threads and ln["batch"] == batch]
    if not chosen:
        raise InvalidArgumentError(f"no result line with threads={threads} and batch={batch}")
    return chosen, threads, batch


def figure(lines: list[dict[str, Any]], threads: int | None = None, batch: int | None = None,
           workload: str | None = None) -> "Figure":
    """Two panels: recall@k vs QPS (log) and recall@k vs index memory, one Pareto curve per target;
    with server lines (``vecdb bench run --target``), a third: latency vs concurrent clients."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise FailedPreconditionError("plotting needs matplotlib: pip install 'vecdb[bench]'") from None
    chosen, threads, batch = select(lines, threads, batch, workload)
    shown = workload_label(chosen[0])
    ks = sorted({ln["k"] for ln in chosen})
    if len(ks) > 1:
        raise InvalidArgumentError(f"lines with different k {ks} do not share a recall axis; plot them apart")
    k = ks[0]
    key = f"recall_at_{k}"
    server = [ln for ln in lines if ln.get("others_include_server") and ln["batch"] == batch and ln["k"] == k]
    churn = [ln for ln in chosen if "idle" in ln.get("workload", {})]
    panels = 2 + bool(server) + bool(churn)
    fig = Figure(figsize=(6.5 * panels, 5.5))
    axes = fig.subplots(1, panels)
    ax_qps, ax_mem = axes[0], axes[1]
    targets = list(dict.fromkeys(ln["target"] for ln in chosen))
    for i, target in enumerate(targets):
        mine = [ln for ln in chosen if ln["target"] == target]
        color = f"C{i % 10}"
        qps = pareto([(ln[key], ln["qps"]) for ln in mine])
        ax_qps.plot([p[0] for p in qps], [p[1] for p in qps], "o-", color=color, label=target, markersize=4)
        mem = [(ln[key], ln["index_memory_bytes"] / 2**20) for ln in mine if ln.get("index_memory_bytes")]
        if mem:
            front = pareto(mem, higher_is_better=False)
            ax_mem.plot([p[0] for p in front], [p[1] for p in front], "o-", color=color, label=target, markersize=4)
    names = sorted({ln["dataset"]["name"] for ln in chosen})
    ax_qps.set_yscale("log")
    ax_qps.set_xlabel(f"recall@{k}")
    ax_qps.set_ylabel("queries per second (log)")
    what = "" if shown == "knn" else f" [{shown}]"
    ax_qps.set_title(f"{', '.join(names)}{what}: recall vs QPS (threads={threads}, batch={batch})")
    ax_mem.set_xlabel(f"recall@{k}")
    ax_mem.set_ylabel("index memory (MiB)")
    ax_mem.set_title("recall vs index memory (Pareto: less is better)")
    if server:
        _latency_panel(axes[2], server, batch)
    if churn:
        _churn_panel(axes[-1], churn, targets, k)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _latency_panel(ax: Any, lines: list[dict[str, Any]], batch: int) -> None:
    """p50 (solid) and p99 (dashed) call latency against concurrent clients, per server target
    and search setting."""
    curves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ln in lines:
        curves.setdefault((ln["target"], ln["label"]), []).append(ln)
    for i, ((_, label), mine) in enumerate(curves.items()):
        mine.sort(key=lambda ln: ln["concurrency"])
        x = [ln["concurrency"] for ln in mine]
        color = f"C{i % 10}"
        ax.plot(x, [ln["p50_ms"] for ln in mine], "o-", color=color, label=f"{label} p50", markersize=4)
        ax.plot(x, [ln["p99_ms"] for ln in mine], "o--", color=color, label=f"{label} p99", markersize=4)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency per call (ms)")
    ax.set_title(f"server: latency vs concurrency (batch={batch})")


def _churn_panel(ax: Any, lines: list[dict[str, Any]], targets: list[str], k: int) -> None:
    """p99 call latency against recall@k per target: searched during churn (solid, each
    setting's line figures) and idle just before (dashed, the line's ``workload.idle``)."""
    for i, target in enumerate(targets):
        mine = sorted((ln for ln in lines if ln["target"] == target), key=lambda ln: ln[f"recall_at_{k}"])
        if not mine:
            continue
        color = f"C{i % 10}"
        ax.plot([ln[f"recall_at_{k}"] for ln in mine], [ln["p99_ms"] for ln in mine], "o-", color=color,
                label=f"{target} churn", markersize=4)
        idle = sorted((ln["workload"]["idle"] for ln in mine), key=lambda d: d[f"recall_at_{k}"])
        ax.plot([d[f"recall_at_{k}"] for d in idle], [d["p99_ms"] for d in idle], "s--", color=color,
                label=f"{target} idle", markersize=4)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{k}")
    ax.set_ylabel("p99 latency per call (ms, log)")
    ax.set_title("churn: p99 while a writer inserts and deletes vs idle")


def save_plot(lines: list[dict[str, Any]], out: str | Path, threads: int | None = None,
              batch: int | None = None, workload: str | None = None) -> Path:
    """Draw ``figure`` into ``out`` (PNG, folders created)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure(lines, threads, batch, workload).savefig(out, dpi=110, format="png")
    return out
