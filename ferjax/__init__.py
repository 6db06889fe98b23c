"""ferjax: a fast, correct, reproducible JAX/Flax trainer for facial expression recognition."""

__version__ = "0.1.0"

from ferjax.runtime import platform as _platform

# XLA's CPU flags must be in place before JAX's first computation; see ferjax/runtime/platform.py
# (FERJAX_CPU_TUNING=0 turns this off). TensorFlow (tf.data only) is told to stay quiet before
# anything imports it; nor does FFmpeg inside OpenCV's video reader.
_platform.configure_xla_cpu()
_platform.quiet_tensorflow()
_platform.quiet_ffmpeg()
