"""The aarch64 performance lab: instruction counts under qemu-user and llvm-mca cycle estimates (bench/bench_aarch64.py)."""
