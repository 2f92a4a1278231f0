"""Benchmarks for fastpush; `python -m benches.fanout` is the headline (see its --help)."""
