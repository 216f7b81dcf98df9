"""Timing and peak-memory measurement shared by every benchmark section.

Timing: ``warmup`` untimed calls, then ``repeats`` timed calls; the median is reported (robust to
the other processes sharing the machine). On CUDA every call is bracketed by
``torch.cuda.synchronize()``.

Peak memory:
- CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus the memory
  allocated before the timed calls (weights and inputs excluded).
- CPU: the process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``) minus the
  resident set just before the timed calls. ``VmHWM`` is reset to the current resident set by
  writing ``5`` to ``/proc/self/clear_refs`` (Linux; allowed for the process owner on most kernels,
  refused in some containers). When the reset is refused, a 1 kHz sampling thread of ``VmRSS``
  is used instead (it can miss spikes shorter than a millisecond). ``malloc_trim(0)`` is called
  first so freed allocator pages do not hide new allocations. This measures activations and
  workspaces as the operating system sees them (torch's CPU allocator has no peak counter).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

_STATUS = "/proc/self/status"


@dataclass
class Measurement:
    """One timed section.

    Attributes:
        median_s: Median wall time of one call, in seconds.
        times_s: Every timed call, in seconds.
        peak_mem_mb: Peak memory above the state before the timed calls, in MiB (None if unknown).
        mem_method: How ``peak_mem_mb`` was measured.
    """

    median_s: float
    times_s: list[float] = field(default_factory=list)
    peak_mem_mb: float | None = None
    mem_method: str = "none"


def _read_status_kb(key: str) -> int | None:
    """Reads one ``kB`` field (e.g. ``VmRSS``) of ``/proc/self/status``; None if unavailable."""
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    """Returns freed heap pages to the OS (glibc only; silently skipped elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_hwm() -> bool:
    """Resets ``VmHWM`` to the current RSS; returns False when the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _RssSampler:
    """Samples ``VmRSS`` every millisecond in a background thread and keeps the maximum (kB)."""

    def __init__(self) -> None:
        self.max_kb = _read_status_kb("VmRSS") or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.max_kb = max(self.max_kb, _read_status_kb("VmRSS") or 0)
            time.sleep(0.001)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PeakMemory:
    """Context manager measuring peak memory above the state at entry (see module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self.method = "none"
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated - memory_allocated before"
            return self
        _malloc_trim()
        self._base = _read_status_kb("VmRSS")
        if self._base is None:
            return self
        if _reset_hwm():
            self.method = "VmHWM - VmRSS before (VmHWM reset via /proc/self/clear_refs)"
        else:
            self._sampler = _RssSampler().__enter__()
            self.method = "max sampled VmRSS (1 kHz) - VmRSS before"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._base
            self.peak_mb = peak / 2**20
            return
        if self._base is None:
            return
        if self._sampler is not None:
            self._sampler.__exit__()
            peak_kb = self._sampler.max_kb
        else:
            peak_kb = _read_status_kb("VmHWM") or 0
        self.peak_mb = max(peak_kb - self._base, 0) / 1024


def synchronize(device: torch.device) -> None:
    """Waits for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> Measurement:
    """Times ``fn`` (median of ``repeats`` calls after ``warmup`` calls) and its peak memory.

    Args:
        fn: The work to time; its return value is dropped after each call.
        device: Where ``fn`` runs (CUDA calls are synchronised).
        warmup: Untimed calls first (>= 0).
        repeats: Timed calls (>= 1).

    Returns:
        The :class:`Measurement`.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"measure: need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    with PeakMemory(device) as mem:
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
            del out
    return Measurement(statistics.median(times), times, mem.peak_mb, mem.method)


def matmul_gflops(
    device: torch.device, size: int, warmup: int, repeats: int, dtype: torch.dtype = torch.float32
) -> dict[str, float]:
    """Measures this machine's dense GEMM throughput (``size x size`` times ``size x size``).

    Returns:
        ``{"size", "median_s", "gflops"}`` with ``gflops = 2 size^3 / median_s / 1e9``.
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    m = measure(lambda: torch.mm(a, b, out=out), device, warmup, repeats)
    return {"size": size, "median_s": m.median_s, "gflops": 2 * size**3 / m.median_s / 1e9}


def interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds of each call, the competitors interleaved round by round.

    Each round runs every function once, so a change of machine load during the measurement hits
    all of them alike instead of whichever ran last. ``warmup`` rounds are not kept.

    Returns:
        ``{name: [seconds of each kept round]}``.
    """
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for round_index in range(warmup + repeats):
        for name, fn in fns.items():
            m = measure(fn, device, 0, 1)
            if round_index >= warmup:
                seconds[name].append(m.median_s)
    return seconds


def onnxruntime_matmul_gflops(size: int, warmup: int, repeats: int) -> dict[str, float] | None:
    """The same fp32 GEMM probe through onnxruntime's MatMul kernel (None without onnxruntime).

    onnxruntime's CPU GEMM (MLAS) can beat torch's on the same machine; the machine's GEMM rate
    is the faster of the two probes, so "x machine GEMM" compares with the fastest kernel here.
    """
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((size, size), dtype=np.float32) for k in ("a", "b")}
    m = measure(lambda: session.run(None, feeds), torch.device("cpu"), warmup, repeats)
    return {"size": size, "median_s": m.median_s, "gflops": 2 * size**3 / m.median_s / 1e9}
