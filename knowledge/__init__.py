"""Knowledge: document loading, chunking, embedding, the Chroma store, hybrid retrieval and the index lifecycle."""

from __future__ import annotations

import os

# MKL's own worker threads spin after each call; on 2 cores they starve the Chroma query that follows a query
# embedding (hybrid p50 at 100k chunks: 20 ms -> 7 ms, bench/index_latency.py), while torch keeps its OpenMP
# parallelism (embedding throughput unchanged). Must be set before torch loads.
pass  # MKL_NUM_THREADS experiment
