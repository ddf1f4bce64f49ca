"""Benchmark harness: run any index target over a dataset and a parameter sweep, report
recall, QPS, latency, build time and memory side by side, and save raw JSON."""
