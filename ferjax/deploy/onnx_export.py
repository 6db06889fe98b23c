"""A trained run as an ONNX model (float32 or int8), run with ONNX Runtime.

Route: jax2onnx converts the JAX function itself (jaxpr -> ONNX ops). The other route, the
jax2tf SavedModel through tf2onnx 1.17, cannot work with this JAX: jax2tf only writes native
serialisation now (the whole model is one XlaCallModule op holding StableHLO; the
`native_serialization=False` flag is accepted and ignored) and tf2onnx fails on that op
("Could not infer the attribute type"). Going through TFLite first (SavedModel -> TFLite ->
tf2onnx --tflite) loses the dynamic batch: the TFLite converter rejects the flip TTA's dynamic
gather when the batch is not fixed. Measured with jax2onnx 0.13.0 and ONNX Runtime 1.32 on 2
CPU cores: the first conversion in a process takes ~9-15 s (jax2onnx loads its plugins), each
further one 0.1-1.1 s (the tests' tiny cnn ... ResNet-50); `ferjax export --format onnx` of the
demo run takes ~16 s in all, and its probabilities differ from JAX's by at most 3.8e-6 over the
1,000 test faces (SavedModel 8.6e-7, TFLite 1.5e-6).

The graph: `images` uint8[batch, H, W, C] (batch dynamic) -> `probabilities` float32[batch, K]
in the order of labels.txt, with everything `ferjax predict` does after face cropping inside:
the cast, median filter, test-time views, normalisation, softmax and the run's post-hoc logit
adjustment. int8 (`quantize_onnx`): ONNX Runtime's static QDQ quantisation, per-channel int8
weights and int8 activations calibrated on the run's training faces; the convolutions, matrix
products, pooling and activations run in int8 while the input cast and the normalisation stay
float32 (ONNX Runtime does not quantise Sub/Div/Sqrt), so the input stays raw uint8 pixels.

onnx, onnxruntime and jax2onnx are optional (the `onnx` extra) and imported only here, inside
the functions that need them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile

import jax
import numpy as np

from ferjax.deploy.common import ExportError, write_labels
from ferjax.runtime.errors import FerjaxError

EXTRA = "pip install -e '.[onnx]' (the onnx extra: onnx, onnxruntime, jax2onnx)"
CHUNK = 64  # images per ONNX Runtime call


class MissingExtraError(FerjaxError):
    """An optional package for ONNX export is not installed."""


def require(module: str):
    """Imports `module` (onnx, onnxruntime, jax2onnx...) or raises a one-line error naming the
    extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = (e.name or module).split(".")[0]
        raise MissingExtraError(f"ONNX export needs {missing}: {EXTRA}") from None


@contextlib.contextmanager
def _quiet():
    """jax2onnx prints DEBUG lines to stdout and logs warnings for plugins of other libraries
    (dm_pix) and value types it skips: none of them concern the exported model."""
    loggers = [logging.getLogger(n) for n in ("jax2onnx", "onnx_ir", "onnxscript")]
    levels = [g.level for g in loggers]
    for g in loggers:
        g.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for g, level in zip(loggers, levels):
            g.setLevel(level)


def _first_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:300]


def export_onnx(run, out_path: str, tta: str | None = None) -> str:
    """Writes the run's classify function as ONNX to out_path (+ labels.txt beside it)."""
    onnx = require("onnx")
    require("onnxruntime")
    to_onnx = require("jax2onnx").to_onnx
    classify = run.classify_fn(tta)
    variables = run.variables
    batch = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((*batch, *run.input_shape), np.uint8)
    try:
        with _quiet():
            model = to_onnx(
                lambda images: classify(variables, images),
                [spec],
                model_name=f"ferjax_{run.info.model}",
                input_names=["images"],
                output_names=["probabilities"],
            )
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        raise ExportError(f"ONNX conversion failed: {_first_line(e)}") from None
    # jax2onnx records some intermediate shapes in NCHW where the values are NHWC; ONNX Runtime
    # warns about each and re-infers them. The graph's inputs and outputs keep their shapes.
    del model.graph.value_info[:]
    onnx.helper.set_model_props(
        model,
        {
            "class_names": ",".join(run.class_names),
            "input": f"uint8[batch, {', '.join(map(str, run.input_shape))}] face crops",
            "output": "float32[batch, K] class probabilities",
        },
    )
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    onnx.save(model, out_path)
    write_labels(run, os.path.dirname(os.path.abspath(out_path)))
    return out_path


def session(path: str):
    """An ONNX Runtime CPU session, quiet (warnings only as errors)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_probs(path: str, images: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """Probabilities float32[N, K] of uint8[N, H, W, C] faces, `chunk` images per call."""
    sess = session(path)
    name = sess.get_inputs()[0].name
    images = np.asarray(images, np.uint8)
    out = [sess.run(None, {name: images[s : s + chunk]})[0] for s in range(0, len(images), chunk)]
    return np.concatenate(out) if out else np.zeros((0, sess.get_outputs()[0].shape[-1]))


def quantize_onnx(float_path: str, out_path: str, calibration: np.ndarray) -> str:
    """Static int8 quantisation (QDQ, per-channel weights) of an ONNX model, activation ranges
    from `calibration` (uint8 faces) by min/max; labels.txt copied beside out_path."""
    q = require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [{"images": calibration[s : s + 32]} for s in range(0, len(calibration), 32)]

    class Faces(q.CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        try:
            with _quiet():
                # ONNX Runtime's symbolic shape inference fails on the Shape ops of the dynamic
                # batch; ONNX's own inference and the graph optimisations still run.
                quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
                q.quantize_static(
                    prepared,
                    out_path,
                    Faces(),
                    quant_format=q.QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=q.QuantType.QInt8,
                    weight_type=q.QuantType.QInt8,
                    calibrate_method=q.CalibrationMethod.MinMax,
                )
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"ONNX int8 quantisation failed: {_first_line(e)}") from None
    src = os.path.join(os.path.dirname(os.path.abspath(float_path)), "labels.txt")
    dst = os.path.join(os.path.dirname(os.path.abspath(out_path)), "labels.txt")
    if os.path.isfile(src) and os.path.abspath(src) != os.path.abspath(dst):
        with open(src) as f, open(dst, "w") as g:
            g.write(f.read())
    return out_path
