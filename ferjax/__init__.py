"""ferjax: a fast, correct, reproducible JAX/Flax trainer for facial expression recognition."""

__version__ = "0.1.0"

import time as _time

# When this command started, for the wall-clock account (ferjax.runtime.clock): the import of
# ferjax, the first thing every entry point does; a malloc re-exec passes the first start on.
STARTED_AT = _time.time()

from ferjax.runtime import platform as _platform  # noqa: E402

STARTED_AT = _platform.started_at(STARTED_AT)

# XLA's CPU flags must be in place before JAX's first computation; see ferjax/runtime/platform.py
# (FERJAX_CPU_TUNING=0 turns this off). TensorFlow (tf.data only) is told to stay quiet before
# anything imports it; nor does FFmpeg inside OpenCV's video reader.
_platform.configure_xla_cpu()
_platform.quiet_tensorflow()
_platform.quiet_ffmpeg()
