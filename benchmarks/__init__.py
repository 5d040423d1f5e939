"""One reproducible benchmark harness: ``unlearn-cli bench`` (see ``benchmarks.harness``).

Inference throughput and latency per backend, the guard's overhead, peak memory and the
roofline fraction against this machine's measured GEMM peak; fit speed per precision and
compilation mode (and 2-process DDP); and the unlearning table (auditor-graded residual target
rates, FID, attribute flips, PGD). The older single-purpose scripts (``export_speed.py``,
``fit_speed.py``, ``serve_load.py``) stay runnable on their own and are imported from here.
"""
