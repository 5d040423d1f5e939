"""The benchmark harness of the repository (not installed): ``python -m benchmarks`` or ``unlearn-cli bench``.

Inference per backend and batch (eager, torch.compile, ONNX Runtime through the service's runtime),
guard overhead, peak memory and the roofline against this machine's GEMM peak; fit speed per
precision and compilation mode and 2-process DDP; the unlearning table (fit + evaluate); the HTTP
load test. ``serve_abuse`` and ``trust_cost`` run on their own (``python -m benchmarks.serve_abuse``).
"""
