"""Benchmarks (`make bench` = `python -m bench.run`): latency, throughput, CPU cost, memory, start-up, OCR."""
