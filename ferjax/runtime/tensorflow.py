"""TensorFlow, used for tf.data only: imported without Keras, never given an accelerator."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _NoKerasLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("keras: not loaded while TensorFlow is imported for tf.data")


class _SkipKeras(importlib.abc.MetaPathFinder):
    """While TensorFlow is being imported, executing `import keras` raises ImportError (looking
    Keras up still works). TensorFlow's __init__ eagerly imports Keras (and through it
    scikit-learn), a large part of its import time, and catches that ImportError; ferjax needs
    only tf.data. A later `import keras` works as usual."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        real = importlib.machinery.PathFinder.find_spec(name, path)
        if real is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, _NoKerasLoader(), origin=real.origin)
        spec.submodule_search_locations = real.submodule_search_locations
        return spec


def import_tensorflow():
    """TensorFlow for tf.data: imported without Keras (when nothing imported it yet), with the
    accelerators hidden from it. ferjax imports TensorFlow only here, when a pipeline needs it
    (a run whose images live on the device never does)."""
    if "tensorflow" not in sys.modules and "keras" not in sys.modules:
        skip = _SkipKeras()
        sys.meta_path.insert(0, skip)
        try:
            import tensorflow
        finally:
            sys.meta_path.remove(skip)
    import tensorflow

    _hide_gpus(tensorflow)
    return tensorflow


_gpus_hidden = False


def hide_gpus_from_tensorflow() -> None:
    """TensorFlow is used for tf.data only: it must never take accelerator memory. Safe to call
    any number of times (only the first call does anything). Imports TensorFlow."""
    import_tensorflow()


def _hide_gpus(tf) -> None:
    global _gpus_hidden
    if _gpus_hidden:
        return
    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):
        pass  # already initialised, or no such device type
    _gpus_hidden = True
