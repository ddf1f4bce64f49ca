"""Text tables of a benchmark record: every run, builds, and the at-recall summary with ratios."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate


def _fmt(v: Any, digits: int = 3) -> Any:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3g}"
    return v


def render(record: dict[str, Any]) -> str:
    """All tables of one run as text."""
    cfg = record["meta"]["config"]
    k = cfg["k"]
    out = [f"# {record['meta']['dataset']} · k={k} · baseline={cfg['baseline'] or '-'} · {record['meta']['when']}"]
    builds = [[b["target"], _fmt(b["build_s"], 2), b["build_threads"], _fmt(b["memory_bytes"] / 2**20, 1),
               _fmt(b["rss_delta_bytes"] / 2**20, 1)] for b in record["builds"]]
    base_b = next((b for b in record["builds"] if b["target"] == cfg["baseline"]), None)
    for row, b in zip(builds, record["builds"]):
        row.append(_fmt(b["build_s"] / base_b["build_s"], 2) if base_b else "-")
        row.append(_fmt(b["memory_bytes"] / base_b["memory_bytes"], 2) if base_b and base_b["memory_bytes"] else "-")
    out.append(tabulate(builds, headers=["target", "build s", "threads", "memory MiB", "RSS delta MiB",
                                         "build ×base", "memory ×base"], tablefmt="github"))
    runs = [[r["label"], r["threads"], r["batch"], _fmt(r["selectivity"]), _fmt(r["recall_at_1"]),
             _fmt(r[f"recall_at_{k}"]), _fmt(r["qps"], 1), _fmt(r["p50_ms"]), _fmt(r["p99_ms"])]
            for r in record["runs"]]
    out.append(tabulate(runs, headers=["target", "threads", "batch", "filter", "R@1", f"R@{k}", "QPS",
                                       "p50 ms", "p99 ms"], tablefmt="github"))
    summ = [[s["target"], s["threads"], s["batch"], _fmt(s["selectivity"]), s["label"] or "(not reached)",
             _fmt(s["qps"], 1), _fmt(s["ratio_vs_baseline"], 2)] for s in record["summary"]]
    out.append(f"Best QPS at recall@{k} >= {cfg['at_recall']}:")
    out.append(tabulate(summ, headers=["target", "threads", "batch", "filter", "setting", "QPS", "×baseline"],
                        tablefmt="github"))
    return "\n\n".join(out)
