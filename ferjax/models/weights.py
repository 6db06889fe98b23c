"""ImageNet weight files -> ferjax's VGG16 / ResNet-50 backbones and ResNet-18/34 (imagenet
stem), for `model.init_from` (`ferjax convert`).

Sources (recognised by content, not only by suffix):
  keras-h5      Keras applications legacy HDF5 weights (the files `weights='imagenet'` downloads,
                `save_weights` of Keras 2, or a whole model saved as .h5), with or without top;
  keras3-h5     Keras 3 `model.save_weights("x.weights.h5")`;
  safetensors   PyTorch torchvision / timm state dicts (read with numpy only);
  torch         `.pth` / `.pt` state dicts (needs torch).
The classifier of the source (Keras fc1/fc2/predictions, torch fc/classifier) is dropped: ferjax
adds its own FER head. Layouts: conv OIHW (torch) -> HWIO; Keras kernels are already HWIO.
BatchNorm gamma/beta/moving mean/variance (weight/bias/running_mean/running_var) ->
scale/bias/mean/var. Keras ResNet conv biases are folded into the following BatchNorm mean.

DST is a msgpack file (flax.serialization) of {"params": {"backbone": ...}, "batch_stats":
{"backbone": ...}, "meta": {"format", "model", "style", "source", "source_format"}}, which
`model.init_from` accepts. `style` records the source's ResNet-50 variant (keras | torch).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import serialization

from ferjax.models.imagenet import RESNET50_STAGES, VGG16, VGG16_BLOCKS, ResNet50
from ferjax.models.resnet import ResNet
from ferjax.runtime.errors import CheckpointError

# Models whose ImageNet weight files convert. vgg16/resnet50 parameters sit under `backbone/`
# (TransferNet adds the FER head); resnet18/34 are ferjax's ResNet with the imagenet stem, whose
# parameters sit at the top level next to its own head.
WEIGHT_MODELS = ("vgg16", "resnet50", "resnet18", "resnet34")
BASIC_RESNETS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}

FORMAT = "ferjax-transfer-v1"
TOP_LEVEL_PREFIXES = ("module.", "model.", "backbone.", "encoder.")


# ------------------------------------------------------------------------------- layer tables


def _layers(model: str) -> Iterator[tuple[str, str, str, str]]:
    """(ferjax path, kind conv|bn, keras layer name, torch module name), in Keras layer order."""
    if model == "vgg16":
        idx = 0
        for b, (_, convs) in enumerate(VGG16_BLOCKS, start=1):
            for c in range(1, convs + 1):
                yield f"block{b}_conv{c}", "conv", f"block{b}_conv{c}", f"features.{idx}"
                idx += 2
            idx += 1
    elif model == "resnet50":
        yield "stem_conv", "conv", "conv1_conv", "conv1"
        yield "stem_bn", "bn", "conv1_bn", "bn1"
        for s, blocks in enumerate(RESNET50_STAGES, start=1):
            for b in range(1, blocks + 1):
                ours, keras, torch = (
                    f"stage{s}_block{b}",
                    f"conv{s + 1}_block{b}",
                    f"layer{s}.{b - 1}",
                )
                for i in (1, 2, 0, 3) if b == 1 else (1, 2, 3):
                    if i == 0:
                        yield (
                            f"{ours}/proj_conv",
                            "conv",
                            f"{keras}_0_conv",
                            f"{torch}.downsample.0",
                        )
                        yield f"{ours}/proj_bn", "bn", f"{keras}_0_bn", f"{torch}.downsample.1"
                    else:
                        yield f"{ours}/conv{i}", "conv", f"{keras}_{i}_conv", f"{torch}.conv{i}"
                        yield f"{ours}/bn{i}", "bn", f"{keras}_{i}_bn", f"{torch}.bn{i}"
    elif model in BASIC_RESNETS:
        # torchvision/timm names only: keras.applications has no ResNet-18/34.
        yield "stem_conv", "conv", "", "conv1"
        yield "stem_bn", "bn", "", "bn1"
        for s, blocks in enumerate(BASIC_RESNETS[model], start=1):
            for b in range(1, blocks + 1):
                ours, torch = f"stage{s}_block{b}", f"layer{s}.{b - 1}"
                for i in (1, 2):
                    yield f"{ours}/conv{i}", "conv", "", f"{torch}.conv{i}"
                    yield f"{ours}/bn{i}", "bn", "", f"{torch}.bn{i}"
                if s > 1 and b == 1:
                    yield f"{ours}/proj_conv", "conv", "", f"{torch}.downsample.0"
                    yield f"{ours}/proj_bn", "bn", "", f"{torch}.downsample.1"
    else:
        raise CheckpointError(
            f"convert: unknown model {model!r}, expected one of {', '.join(WEIGHT_MODELS)}"
        )


def _old_keras_name(name: str) -> str:
    """keras-applications < 1.0.7 ResNet50 names: conv2_block1_1_conv -> res2a_branch2a."""
    if name in ("conv1_conv", "conv1_bn"):
        return "conv1" if name == "conv1_conv" else "bn_conv1"
    m = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)", name)
    if not m:
        return name
    stage, block, i, kind = m.groups()
    branch = "1" if i == "0" else "2" + "abc"[int(i) - 1]
    return f"{'res' if kind == 'conv' else 'bn'}{stage}{'abcdef'[int(block) - 1]}_branch{branch}"


def prefix(model: str) -> str:
    """Where the converted tensors sit in the model's parameter tree."""
    return "" if model in BASIC_RESNETS else "backbone/"


def expected_shapes(model: str) -> dict[str, tuple[int, ...]]:
    """'<prefix><layer>/<kernel|bias|scale|mean|var>' -> shape, for RGB input (the head
    excluded)."""
    if model in BASIC_RESNETS:
        net = ResNet(num_classes=1, stage_sizes=BASIC_RESNETS[model], stem="imagenet")
    else:
        net = VGG16() if model == "vgg16" else ResNet50()
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    out = {}
    for col in ("params", "batch_stats"):
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes.get(col, {}))[0]:
            name = "/".join(p.key for p in path)
            if not name.startswith("head"):
                out[prefix(model) + name] = tuple(leaf.shape)
    return out


# ------------------------------------------------------------------------------- readers

# canonical name -> (keras weight name, torch parameter name, permutation source -> ferjax)
_CONV = {"kernel": ("kernel", "weight", (2, 3, 1, 0)), "bias": ("bias", "bias", None)}
_BN = {
    "scale": ("gamma", "weight", None),
    "bias": ("beta", "bias", None),
    "mean": ("moving_mean", "running_mean", None),
    "var": ("moving_variance", "running_var", None),
}


class _Source:
    """A weight file seen as `tensor(layer, canonical) -> np.ndarray | None` in source layout."""

    fmt = ""
    style = ""

    def __init__(self, path: str):
        self.path = path

    def name(self, keras: str, torch: str, kind: str, canonical: str) -> str:
        raise NotImplementedError

    def tensor(self, keras: str, torch: str, kind: str, canonical: str):
        raise NotImplementedError

    def permutation(self, kind: str, canonical: str):
        return None

    def close(self) -> None:
        pass


class _KerasLegacy(_Source):
    fmt, style = "keras-h5", "keras"

    def __init__(self, path, f):
        super().__init__(path)
        self.f = f
        self.root = f["model_weights"] if "model_weights" in f else f

    def _group(self, keras: str):
        for name in (keras, _old_keras_name(keras)):
            if name in self.root:
                return name, self.root[name]
        return keras, None

    def name(self, keras, torch, kind, canonical):
        want = (_CONV if kind == "conv" else _BN)[canonical][0]
        return f"{self._group(keras)[0]}/{want}"

    def tensor(self, keras, torch, kind, canonical):
        _, group = self._group(keras)
        if group is None:
            return None
        want = (_CONV if kind == "conv" else _BN)[canonical][0]
        names = [
            n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])
        ]
        for n in names:
            if n.rsplit("/", 1)[-1].split(":")[0] == want:
                return np.asarray(group[n])
        return None

    def close(self):
        self.f.close()


class _Keras3(_Source):
    """Keras 3 `.weights.h5`: layers are stored as layers/<class>[_<k>]/vars/<i>, where k counts
    the layers of that class in the model's layer order (the order of `_layers`)."""

    fmt, style = "keras3-h5", "keras"
    _CLASS = {"conv": "conv2d", "bn": "batch_normalization"}
    _VAR = {"conv": ("kernel", "bias"), "bn": ("scale", "bias", "mean", "var")}

    def __init__(self, path, f, model):
        super().__init__(path)
        self.f = f
        self.root = self._find_layers(f)
        counts, self.keys = defaultdict(int), {}
        for _, kind, keras, _ in _layers(model):
            k = counts[kind]
            counts[kind] += 1
            self.keys[keras] = self._CLASS[kind] + (f"_{k}" if k else "")

    @staticmethod
    def _find_layers(f):
        group = f["layers"]
        while "conv2d" not in group:
            nested = [g["layers"] for g in group.values() if "layers" in g]
            if not nested:
                return group
            group = nested[0]
        return group

    def _var(self, keras, kind, canonical):
        return f"{self.keys[keras]}/vars/{self._VAR[kind].index(canonical)}"

    def name(self, keras, torch, kind, canonical):
        return f"layers/{self._var(keras, kind, canonical)} ({keras} {canonical})"

    def tensor(self, keras, torch, kind, canonical):
        key = self._var(keras, kind, canonical)
        return np.asarray(self.root[key]) if key in self.root else None

    def close(self):
        self.f.close()


class _Torch(_Source):
    """A torchvision / timm state dict (any common wrapper prefix such as `module.` removed)."""

    style = "torch"

    def __init__(self, path, fmt, state: dict):
        super().__init__(path)
        self.fmt = fmt
        for prefix in TOP_LEVEL_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
        self.state = state

    def name(self, keras, torch, kind, canonical):
        return f"{torch}.{(_CONV if kind == 'conv' else _BN)[canonical][1]}"

    def tensor(self, keras, torch, kind, canonical):
        value = self.state.get(self.name(keras, torch, kind, canonical))
        return None if value is None else np.asarray(value)

    def permutation(self, kind, canonical):
        return _CONV[canonical][2] if kind == "conv" else None


def _open(path: str, model: str) -> _Source:
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such weight file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise CheckpointError(f"{path}: not a readable HDF5 file ({e})") from None
        if "layer_names" in f.attrs or "model_weights" in f:
            return _KerasLegacy(path, f)
        if "layers" in f:
            return _Keras3(path, f, model)
        f.close()
        raise CheckpointError(f"{path}: an HDF5 file that is not a Keras weight file")
    if path.endswith(".safetensors"):
        try:
            return _Torch(path, "safetensors", safetensors.numpy.load_file(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if path.endswith((".pth", ".pt", ".bin", ".ckpt")):
        try:
            import torch  # optional: only .pth files need it
        except ImportError:
            raise CheckpointError(
                f"{path}: reading a .pth state dict needs torch (pip install torch), or save it "
                "as .safetensors"
            ) from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable torch state dict ({e})") from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        state = {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
        return _Torch(path, "torch", state)
    raise CheckpointError(
        f"{path}: unknown weight file, expected Keras .h5 / .weights.h5, .safetensors or .pth"
    )


# ------------------------------------------------------------------------------- conversion


def convert(src: str, model: str) -> dict:
    """Reads an ImageNet weight file. Returns {"params": {"backbone": ...}, "batch_stats":
    {"backbone": ...}, "meta": {...}} with float32 numpy leaves in ferjax layout.

    Raises CheckpointError naming the first tensor that is missing or has the wrong shape.
    """
    layers = list(_layers(model))
    expected = expected_shapes(model)
    source = _open(src, model)
    if model in BASIC_RESNETS and source.style == "keras":
        source.close()
        raise CheckpointError(
            f"{src}: keras.applications has no {model}; convert a torchvision or timm "
            ".safetensors / .pth file"
        )
    flat: dict[str, np.ndarray] = {}
    try:
        for ours, kind, keras, torch in layers:
            for canonical in _CONV if kind == "conv" else _BN:
                key = f"{prefix(model)}{ours}/{canonical}"
                want = expected.get(key)
                value = source.tensor(keras, torch, kind, canonical)
                name = source.name(keras, torch, kind, canonical)
                if value is None:
                    if want is None:
                        continue  # an optional tensor (a conv bias ResNet-50 does not use)
                    raise CheckpointError(
                        f"{src}: missing tensor {name!r} for {model} ({source.fmt} naming)"
                    )
                perm = source.permutation(kind, canonical)
                target = want or value.shape
                src_shape = tuple(target[p] for p in np.argsort(perm)) if perm else tuple(target)
                if tuple(value.shape) != src_shape:
                    raise CheckpointError(
                        f"{src}: tensor {name!r} has shape {tuple(value.shape)}, expected "
                        f"{src_shape} for {model}"
                    )
                value = np.asarray(value, np.float32)
                flat[key] = np.transpose(value, perm) if perm else value
    finally:
        source.close()
    _fold_conv_bias(flat, expected)
    params: dict = {}
    stats: dict = {}
    for key, value in flat.items():
        tree = stats if key.rsplit("/", 1)[-1] in ("mean", "var") else params
        *parents, leaf = key.split("/")
        for p in parents:
            tree = tree.setdefault(p, {})
        tree[leaf] = value
    meta = {
        "format": FORMAT,
        "model": model,
        "style": source.style,
        "source": os.path.basename(src),
        "source_format": source.fmt,
    }
    return {"params": params, "batch_stats": stats, "meta": meta}


def _fold_conv_bias(flat: dict[str, np.ndarray], expected: dict) -> None:
    """BN(conv(x) + b; mean m) == BN(conv(x); mean m - b): drop biases the model does not have."""
    for key in [k for k in flat if k.endswith("/bias") and k not in expected]:
        layer = key[: -len("/bias")]
        bn = re.sub(r"(stem_|proj_)?conv(\d?)$", lambda m: f"{m[1] or ''}bn{m[2]}", layer)
        flat[f"{bn}/mean"] = flat[f"{bn}/mean"] - flat.pop(key)


def save(converted: dict, dst: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with open(dst, "wb") as f:
        f.write(serialization.msgpack_serialize(converted))


def load(path: str) -> dict:
    """Reads a file written by `save`."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = serialization.msgpack_restore(data)
    except Exception:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a ferjax converted weight file (msgpack)") from None
    if not isinstance(tree, dict) or tree.get("meta", {}).get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ferjax converted weight file ({FORMAT})")
    return tree
