"""How many threads TVM's CPU runtime uses for the artifacts this process runs.

TVM sizes its thread pool once, when a thread first launches parallel work: TVM_NUM_THREADS (or OMP_NUM_THREADS)
if set, else, on x86, half the logical CPUs, on the guess that the other half are hyperthreads. On a machine
without SMT that halves the cores: measured here (2 vCPUs, no SMT), every artifact ran on one thread, ResNet-18 in
49 ms against 30 ms on two. `config_threadpool` can lower the pool's size later, never raise it.

So `import tvmcompress` sets TVM_NUM_THREADS to the physical cores this process may use, unless the user set
either variable, and a CPU session then asks for its artifact's `num-cores` (capped by the pool).
The C bundle of `export` does the same in its own `create` (deploy_templates/model_api.cc.in).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV_VARS = ("TVM_NUM_THREADS", "OMP_NUM_THREADS")
# TVM's ThreadGroup::AffinityMode kBig: spread the workers over the (fastest) cores.
_AFFINITY_BIG = 1


def set_default_pool_size() -> None:
    """Before any TVM thread pool exists: size it to the physical cores, unless the user chose a size."""
    if any(os.environ.get(name) for name in ENV_VARS):
        return
    from .targets.cpu_features import physical_cores

    os.environ["TVM_NUM_THREADS"] = str(physical_cores())


def use_threads(threads: int) -> int:
    """Run this thread's parallel TVM kernels on `threads` workers (at most the pool's size); returns the count."""
    import tvm

    num_threads = tvm.get_global_func("runtime.NumThreads")
    # The pool's size: what TVM read from the environment. NumThreads() tells the workers in use now (after an
    # earlier call lowered it), which config_threadpool may raise again up to the pool's size.
    current = int(num_threads())  # creates the pool for this thread if it has none
    pool = next((int(os.environ[name]) for name in ENV_VARS if os.environ.get(name, "").isdigit()), current)
    wanted = max(1, min(int(threads), pool)) if threads else pool
    if threads and threads > pool:
        log.debug("the artifact is built for %d cores; TVM's thread pool has %d workers", threads, pool)
    tvm.get_global_func("runtime.config_threadpool")(_AFFINITY_BIG, wanted)
    return int(num_threads())
