"""Process-level CPU tuning, behind one switch: FERJAX_CPU_TUNING=1 (default) or 0.

Two settings that must be made before JAX creates its CPU client (the first computation):

1. Convolution library of XLA's CPU backend. jaxlib 0.10 sends convolutions through YNNPACK by
   default; on x86 that runs 64-channel convolutions on one thread and computes weight gradients
   several times slower than XLA's Eigen kernels (bench/README.md). `XLA_CPU_FLAGS` keeps
   YNNPACK for reductions (where it is faster than XLA's own loops, e.g. BatchNorm statistics)
   and leaves convolutions to Eigen. The flag exists only in some jaxlib versions and XLA aborts
   on an unknown flag, so it is added only for the versions it was measured on, and never when
   XLA_FLAGS already sets it. It is read by the CPU compiler only: GPU/TPU programs are untouched.
2. glibc malloc: every XLA step allocates its large temporaries afresh and the kernel faults
   them in page by page. GLIBC_TUNABLES=glibc.malloc.hugetlb=1 backs them with transparent huge
   pages (where the kernel allows it, i.e. THP "madvise" or "always"). glibc reads it at process
   start, so the command-line entry points re-execute themselves once with it set
   (`reexec_with_malloc_tuning`); a library user can export it before starting Python.
"""

from __future__ import annotations

import os
import sys

SWITCH = "FERJAX_CPU_TUNING"
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
XLA_CPU_FLAGS = (f"{YNN_FLAG}=LIBRARY_FUSION_TYPE_REDUCE",)
# jaxlib (major, minor) versions whose XLA has the flag above and was measured with it.
TUNED_JAXLIB = {(0, 10)}
MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"
_REEXEC_MARK = "FERJAX_REEXECUTED"
_STARTED_MARK = "FERJAX_STARTED_AT"


def started_at(now: float) -> float:
    """When this command started: `now`, or, in the process a malloc re-exec started, the time
    the first process passed on (taken out of the environment, so that no child inherits it)."""
    passed = os.environ.pop(_STARTED_MARK, None)
    try:
        return min(float(passed), now) if passed else now
    except ValueError:
        return now


def quiet_tensorflow() -> None:
    """TensorFlow's start-up banner and oneDNN notice off (unless the user set them)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def quiet_ffmpeg() -> None:
    """FFmpeg's own messages inside OpenCV's VideoCapture ("moov atom not found") off, so a bad
    video is reported as one line (unless the user set it). OpenCV reads this when its first
    capture opens, once per process: hence here, before anything opens one."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def tuning_enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _jaxlib_version() -> tuple[int, int]:
    try:
        from jaxlib import version

        major, minor = version.__version__.split(".")[:2]
        return int(major), int(minor)
    except Exception:  # noqa: BLE001 - an unknown jaxlib simply gets no flags
        return (-1, -1)


def _backends_initialized() -> bool:
    """Whether JAX has created its backends. Never imports JAX: importing `ferjax` (which
    calls this) before a re-exec would otherwise load all of JAX twice (~1 s of start-up)."""
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(xla_bridge, "_backends", {})) if xla_bridge is not None else False


def configure_xla_cpu() -> list[str]:
    """Adds XLA_CPU_FLAGS to XLA_FLAGS (before JAX's first computation); returns what it added.

    Does nothing when the switch is off, when the jaxlib version is not one it was measured on,
    when XLA_FLAGS already mentions the flag (the user's choice wins) or when JAX's backends
    already exist (the flags would be ignored)."""
    if not tuning_enabled() or _jaxlib_version() not in TUNED_JAXLIB:
        return []
    current = os.environ.get("XLA_FLAGS", "")
    if _ynn_flag_values() or _backends_initialized():
        return []
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [current, *XLA_CPU_FLAGS]))
    return list(XLA_CPU_FLAGS)


def _ynn_flag_values() -> list[str]:
    """The values XLA_FLAGS gives YNN_FLAG, in order ("" for a bare flag)."""
    return [
        tok.split("=", 1)[1] if "=" in tok else ""
        for tok in os.environ.get("XLA_FLAGS", "").split()
        if tok.split("=", 1)[0] == YNN_FLAG
    ]


def xla_cpu_convs_tuned() -> bool:
    """False when XLA's CPU convolutions go through YNNPACK: jaxlib 0.10's default, or an
    XLA_FLAGS value that lists LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION."""
    values = _ynn_flag_values()
    if not values:
        return _jaxlib_version() not in TUNED_JAXLIB
    return "INDIVIDUAL_CONVOLUTION" not in values[-1]


def reexec_with_malloc_tuning(module: str, args: list[str] | None = None) -> None:
    """Re-executes `python -m module ARGS` (`args`, default sys.argv[1:]) once with
    GLIBC_TUNABLES set (Linux/glibc only).

    No-op when the switch is off, when GLIBC_TUNABLES is already set, when this process is
    already the re-executed one, or on a non-glibc platform. The process id stays the same."""
    import platform

    if (
        not tuning_enabled()
        or os.environ.get(_REEXEC_MARK)
        or "GLIBC_TUNABLES" in os.environ
        or sys.platform != "linux"
        or platform.libc_ver()[0] != "glibc"
    ):
        return
    import ferjax

    env = dict(os.environ, GLIBC_TUNABLES=MALLOC_TUNABLE, **{_REEXEC_MARK: "1"})
    env[_STARTED_MARK] = repr(ferjax.STARTED_AT)
    sys.stdout.flush()
    sys.stderr.flush()
    args = sys.argv[1:] if args is None else args
    os.execve(sys.executable, [sys.executable, "-m", module, *args], env)


def compilation_cache_dir(setting: str) -> str:
    """The directory for JAX's persistent compilation cache: "auto" -> $XDG_CACHE_HOME/ferjax/jax
    (default ~/.cache/ferjax/jax), "" -> "" (off), anything else -> that path."""
    if setting != "auto":
        return os.path.expanduser(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ferjax", "jax")


# Programs that compile faster than this are not stored in the persistent compilation cache
# (JAX counts a cache "miss" only when it stores one). Read at each enable_compilation_cache call.
CACHE_MIN_COMPILE_SECS = 0.1


def enable_compilation_cache(setting: str) -> str:
    """Turns on JAX's persistent compilation cache (train.compilation_cache_dir); returns the
    directory ("" when off). Every compiled program taking CACHE_MIN_COMPILE_SECS or more to
    compile is stored."""
    path = compilation_cache_dir(setting)
    if not path:
        return ""
    import jax

    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def host_memory_bytes() -> int:
    """Memory this process may still use: MemAvailable, or less under a cgroup limit."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            left = int(limit) - usage
            available = left if available is None else min(available, left)
    return available if available is not None else 1 << 62
