"""Ahead-of-time executor: C code that calls the model's kernels in order, no TVM runtime (export --aot)."""
