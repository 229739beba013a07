"""The fused CPU kernels of ``fused_step.c``: compiled once per machine, used when they apply.

Why: a step that reads per-ZIG statistics costs several SGD steps in eager PyTorch, because every
statistic and every update is its own pass over the parameters (docs/optimizers.md, Measurements).
The two C kernels do a statistics step in two reads of each parameter, fewer bytes than
``torch.optim.SGD`` moves. They are compiled with the machine's C compiler the first time an
optimizer needs them and cached in the user's cache folder under a name that hashes the source,
the compiler and the flags, written atomically; a machine without a compiler, a failed compile, a
GPU, float64 or an unusual layout simply keep the eager path (same results up to float rounding).
``ZIGRAPH_NATIVE=0`` turns the kernels off; :func:`status` says whether they are in use and why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Kernels", "kernels", "status"]

SOURCE = Path(__file__).with_name("fused_step.c")
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno")
_I64, _F32, _PTR, _INT = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int


@dataclass(frozen=True)
class Kernels:
    """The loaded library's entry points (see ``fused_step.c`` for their contracts)."""

    sweep1: Callable[..., int]  # zg_sweep1_all: every parameter, statistics in per-index order
    sweep2: Callable[..., int]  # zg_sweep2_all
    path: Path


_lock = threading.Lock()
_loaded: Kernels | None = None
_reason: str | None = None
_tried = False


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zigraph" / "kernels"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    exe = shutil.which(cc.split()[0]) if cc else None
    return exe or shutil.which("cc") or shutil.which("gcc")


def _cpu_identity() -> str:
    """What ``-march=native`` builds for: a cache shared by several machines keeps one library each."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _without(flags: tuple[str, ...], *drop: str) -> tuple[str, ...]:
    return tuple(f for f in flags if f not in drop)


@contextlib.contextmanager
def _built(cc: str) -> Iterator[Path]:
    """The compiled library for this source, compiler and flags (built now unless cached).

    Where the cache cannot be written, the library is built in a private temporary folder that is
    removed on leaving, whether it built or not: once loaded, the library stays mapped, and one folder
    per process would otherwise pile up in the temporary directory."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version, " ".join(FLAGS), platform.machine(), _cpu_identity()):
        key.update(part if isinstance(part, bytes) else part.encode())
    folder = _cache_dir()
    target = folder / f"fused_step-{key.hexdigest()[:16]}.so"
    if target.exists():
        yield target
        return
    private = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    except OSError:  # no writable cache: build into a private temporary folder for this process
        folder = private = Path(tempfile.mkdtemp(prefix="zigraph-kernels-"))
        target = folder / target.name
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        # a compiler without OpenMP (Apple's clang) or without -march=native still builds, slower
        for flags in (FLAGS, _without(FLAGS, "-fopenmp"), _without(FLAGS, "-fopenmp", "-march=native")):
            done = subprocess.run(
                [cc, *flags, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120
            )
            if done.returncode == 0:
                break
        else:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
        os.replace(tmp, target)  # atomic: a concurrent process sees no half-written library
        yield target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _load(path: Path) -> Kernels:
    lib = ctypes.CDLL(str(path))
    s1, s2 = lib.zg_sweep1_all, lib.zg_sweep2_all
    s1.argtypes = [_I64, _PTR, _PTR, _F32, _F32, _F32, _F32, _F32, _PTR, _PTR, _I64, _INT]
    s2.argtypes = [_I64, _PTR, _PTR, _F32, _F32, _PTR, _PTR, _PTR, _I64, _INT]
    s1.restype = s2.restype = _INT
    return Kernels(s1, s2, path)


def kernels() -> Kernels | None:
    """The fused kernels, compiled and loaded on first use; None where they cannot be used here."""
    global _loaded, _reason, _tried
    if _tried:
        return _loaded
    with _lock:
        if _tried:
            return _loaded
        if os.environ.get("ZIGRAPH_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            _reason = "turned off by ZIGRAPH_NATIVE"
        elif sys.platform == "win32":
            _reason = "not built on Windows"
        elif (cc := _compiler()) is None:
            _reason = "no C compiler found (set CC)"
        else:
            try:
                with _built(cc) as path:
                    _loaded = _load(path)
            except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
                _reason = f"could not build or load {SOURCE.name}: {exc}"
        _tried = True
    return _loaded


def status() -> str:
    """One line: whether the fused kernels are in use, and why not when they are not."""
    k = kernels()
    return f"fused CPU kernels in use ({k.path})" if k is not None else f"eager steps only: {_reason}"


def ptr(t: torch.Tensor | None) -> int | None:
    """A tensor's data address for the kernels (None for an absent operand)."""
    return None if t is None else t.data_ptr()
