"""The native decode step (decode.c): built once per source hash with the system C compiler, loaded with ctypes.

`library()` returns the loaded library, or None when it cannot be had on this machine (no C compiler, a CPU
without AVX2/FMA/F16C, a failed build, or `SERVICEBOT_NATIVE=0`); the engine then runs its torch decode path,
which gives the same answers more slowly. A build failure is logged once with the compiler's message.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from plugins.responders.model_cache import cache_root

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("decode.c")
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC"]
_lock = threading.Lock()
_state: dict[str, ctypes.CDLL | None] = {}


def _cpu_ok() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"avx2", "fma", "f16c"} <= set(flags)


def _build() -> ctypes.CDLL | None:
    if os.environ.get("SERVICEBOT_NATIVE", "1") == "0" or not _cpu_ok():
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.warning("No C compiler found: the fast engine decodes through torch (slower, same answers).")
        return None
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_root() / "native" / f"decode-{digest}.so"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run(
                [compiler, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=300
            )
            if done.returncode != 0:
                log.warning("The native decode step did not build; decoding through torch:\n%s", done.stderr[-2000:])
                return None
            os.replace(tmp, target)  # atomic: a concurrent or killed build never leaves half a library
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("The native decode step did not build (%s); decoding through torch.", exc)
            return None
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as exc:
        log.warning("The native decode step did not load (%s); decoding through torch.", exc)
        return None
    ptr = ctypes.c_void_p  # every array is passed as its address (torch tensors' data_ptr())
    i32 = ctypes.c_int
    # dims, eps, weights, batch, x, pos, caches, caps, kv16, cos, sin, logits, threads
    lib.sb_decode.argtypes = [ptr, ctypes.c_float, ptr, i32, ptr, ptr, ptr, ptr, i32, ptr, ptr, ptr, i32]
    lib.sb_decode.restype = ctypes.c_int
    return lib


def library() -> ctypes.CDLL | None:
    """The native decode library, built on first use (None when this machine cannot have it)."""
    with _lock:
        if "lib" not in _state:
            _state["lib"] = _build()
        return _state["lib"]
