"""Transfer learning: Keras / torch weight conversion verified against the source frameworks'
forward passes, init_from partial restore, freezing and unfreezing."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import call_tool  # noqa: E402

from ferjax.cli.convert import main as convert_main  # noqa: E402
from ferjax.config.validate import validate  # noqa: E402
from ferjax.models import weights as convert  # noqa: E402
from ferjax.models.imagenet import VGG16, ResNet50, TransferNet  # noqa: E402
from ferjax.runtime.errors import CheckpointError, ConfigError  # noqa: E402
from ferjax.runtime.workdir import Workdir  # noqa: E402
from ferjax.training import transfer  # noqa: E402
from ferjax.training.checkpoint import Checkpoints  # noqa: E402
from ferjax.training.program import build  # noqa: E402
from ferjax.training.step import TrainState  # noqa: E402

TOL = 1e-4


def _input(seed=0, shape=(2, 32, 32, 3)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _randomise_keras(model, rng):
    """Non-trivial BatchNorm statistics and conv biases (Keras initialises them to 0 / 1)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, g.shape),
                    rng.normal(size=b.shape) * 0.1,
                    rng.normal(size=m.shape) * 0.1,
                    rng.uniform(0.5, 2.0, v.shape),
                ]
            )
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(size=bias.shape) * 0.1])


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """{name: (features float32[2, F] from Keras, [.weights.h5 path, legacy .h5 path])}.

    VGG16 without top, ResNet50 with top (its 1000-class classifier is dropped on conversion).
    """
    keras = pytest.importorskip("keras")
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    tmp = tmp_path_factory.mktemp("keras")
    rng = np.random.default_rng(0)
    x = _input()
    out = {}
    for name, make in (
        ("vgg16", lambda: keras.applications.VGG16(weights=None, include_top=False)),
        (
            "resnet50",
            lambda: keras.applications.ResNet50(
                weights=None, include_top=True, input_shape=(32, 32, 3)
            ),
        ),
    ):
        model = make()
        _randomise_keras(model, rng)
        if name == "resnet50":
            features = keras.Model(model.input, model.get_layer("avg_pool").output)
        else:
            features = keras.Sequential([model, keras.layers.GlobalAveragePooling2D()])
        ref = np.asarray(features(x, training=False))
        new, legacy = str(tmp / f"{name}.weights.h5"), str(tmp / f"{name}.h5")
        model.save_weights(new)
        with h5py.File(legacy, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        out[name] = (ref, [new, legacy])
    return out


def _report(path, framework, got, ref):
    """Printed with -s: the numbers quoted in the issue's closing note."""
    diff, scale = np.abs(got - ref).max(), np.abs(ref).max()
    print(
        f"{os.path.basename(path)}: max |ferjax - {framework}| = {diff:.2e} (max |ref| {scale:.2f})"
    )


_JITTED: dict = {}


def _features(backbone, converted, x):
    variables = {
        "params": converted["params"]["backbone"],
        "batch_stats": converted["batch_stats"].get("backbone", {}),
    }
    key = repr(backbone)  # one compilation per architecture, shared by the files tested
    if key not in _JITTED:
        _JITTED[key] = jax.jit(backbone.apply)
    fmap = _JITTED[key](variables, x)
    return np.asarray(jnp.mean(fmap, axis=(1, 2)))


@pytest.mark.parametrize("model", ["vgg16", "resnet50"])
def test_keras_weight_files_match_keras_outputs(keras_files, model):
    ref, paths = keras_files[model]
    backbone = VGG16() if model == "vgg16" else ResNet50(style="keras")
    for path in paths:
        converted = convert.convert(path, model)
        assert converted["meta"]["style"] == "keras"
        got = _features(backbone, converted, _input())
        assert got.shape == ref.shape
        _report(path, "keras", got, ref)
        np.testing.assert_allclose(got, ref, atol=TOL, rtol=0, err_msg=path)


# ------------------------------------------------------------------------------- torch


def _torchvision_resnet50_state(seed=0, classes=10) -> dict[str, np.ndarray]:
    """A random state dict with torchvision's resnet50 names and shapes."""
    rng = np.random.default_rng(seed)
    shapes = convert.expected_shapes("resnet50")
    state = {}
    for ours, kind, _, torch_name in convert._layers("resnet50"):
        if kind == "conv":
            h, w, i, o = shapes[f"backbone/{ours}/kernel"]
            std = np.sqrt(1.0 / (h * w * i))
            state[f"{torch_name}.weight"] = (rng.normal(size=(o, i, h, w)) * std).astype(np.float32)
        else:
            (c,) = shapes[f"backbone/{ours}/scale"]
            state[f"{torch_name}.weight"] = rng.uniform(0.5, 1.0, c).astype(np.float32)
            state[f"{torch_name}.bias"] = (rng.normal(size=c) * 0.1).astype(np.float32)
            state[f"{torch_name}.running_mean"] = (rng.normal(size=c) * 0.1).astype(np.float32)
            state[f"{torch_name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
            state[f"{torch_name}.num_batches_tracked"] = np.array(7, np.int64)
    state["fc.weight"] = rng.normal(size=(classes, 2048)).astype(np.float32) * 0.01
    state["fc.bias"] = np.zeros(classes, np.float32)
    return state


@pytest.fixture(scope="module")
def torch_state(tmp_path_factory):
    from safetensors.numpy import save_file

    state = _torchvision_resnet50_state()
    path = str(tmp_path_factory.mktemp("torch") / "resnet50.safetensors")
    save_file(state, path)
    return state, path


def test_torchvision_safetensors_converts_and_cli_writes_loadable_file(torch_state, tmp_path):
    state, path = torch_state
    dst = str(tmp_path / "resnet50.msgpack")
    assert call_tool(convert_main, [path, dst, "--model=resnet50"]) == 0
    loaded = convert.load(dst)
    assert loaded["meta"]["style"] == "torch" and loaded["meta"]["source_format"] == "safetensors"
    p, s = loaded["params"]["backbone"], loaded["batch_stats"]["backbone"]
    np.testing.assert_array_equal(
        p["stage2_block1"]["conv2"]["kernel"],
        state["layer2.0.conv2.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        s["stage4_block1"]["proj_bn"]["var"], state["layer4.0.downsample.1.running_var"]
    )
    np.testing.assert_array_equal(p["stem_bn"]["scale"], state["bn1.weight"])


def test_torchvision_resnet50_safetensors_matches_an_independent_forward(torch_state):
    """The converted file in ferjax's ResNet50(style=torch) gives the pooled features of
    torchvision's resnet50 written with lax in torch's layouts (no torch needed)."""
    state, path = torch_state
    x = _input(1)
    got = _features(ResNet50(style="torch"), convert.convert(path, "resnet50"), x)
    ref = _torchvision_features(state, x.transpose(0, 3, 1, 2), (3, 4, 6, 3), bottleneck=True)
    _report(path, "torchvision reference", got, ref)
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)


def test_pth_state_dict_converts_like_its_safetensors(torch_state, tmp_path):
    """A `.pth` checkpoint (torch.save of {"state_dict": {"module." + name: tensor}}, as
    DataParallel training scripts write it) converts to exactly the safetensors result. Reading
    .pth needs torch, ferjax's optional [torch] extra."""
    torch = pytest.importorskip("torch", reason="the optional [torch] extra reads .pth files")
    state, path = torch_state
    pth = str(tmp_path / "resnet50.pth")
    tensors = {"module." + k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    torch.save({"state_dict": tensors}, pth)
    a, b = convert.convert(path, "resnet50"), convert.convert(pth, "resnet50")
    for part in ("params", "batch_stats"):
        jax.tree.map(np.testing.assert_array_equal, a[part], b[part])
    assert b["meta"]["style"] == "torch"


def test_mismatched_files_give_one_line_naming_the_tensor(torch_state, tmp_path, capsys):
    from safetensors.numpy import save_file

    state, _ = torch_state
    bad = dict(state)
    bad["layer3.1.conv2.weight"] = np.zeros((256, 128, 3, 3), np.float32)
    path = str(tmp_path / "bad.safetensors")
    save_file(bad, path)
    msg = (
        f"{path}: tensor 'layer3.1.conv2.weight' has shape (256, 128, 3, 3), expected "
        "(256, 256, 3, 3) for resnet50"
    )
    with pytest.raises(CheckpointError) as e:
        convert.convert(path, "resnet50")
    assert str(e.value) == msg
    missing = {k: v for k, v in state.items() if not k.startswith("layer1.0.bn2.")}
    save_file(missing, path)
    with pytest.raises(CheckpointError) as e:
        convert.convert(path, "resnet50")
    assert (
        str(e.value)
        == f"{path}: missing tensor 'layer1.0.bn2.weight' for resnet50 (safetensors naming)"
    )
    assert call_tool(convert_main, [path, str(tmp_path / "out.msgpack"), "--model=vgg16"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: {path}: missing tensor 'features.0.weight' for vgg16 (safetensors naming)\n"
    )


# ------------------------------------------------------------------------------- init_from


def _zeros_like_init(net, x):
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def test_init_from_converted_file_adapts_gray_input_and_keeps_head_fresh(keras_files, tmp_path):
    _, paths = keras_files["vgg16"]
    dst = str(tmp_path / "vgg16.msgpack")
    convert.save(convert.convert(paths[0], "vgg16"), dst)
    source = convert.load(dst)
    gray = jnp.asarray(_input(2, (2, 20, 20, 1)))
    outs = []
    for adapter in ("replicate", "sum_rgb"):
        net = TransferNet(VGG16(), num_classes=7, input_adapter=adapter, input_size=32)
        fresh = _zeros_like_init(net, gray)
        fresh["params"]["head"]["bias"] = jnp.ones(7)
        merged, notes = transfer.merge_pretrained(
            {"params": fresh["params"], "batch_stats": {}}, source, dst
        )
        assert notes == ["params/head/bias", "params/head/kernel"]
        np.testing.assert_array_equal(merged["params"]["head"]["bias"], np.ones(7))
        kernel = merged["params"]["backbone"]["block1_conv1"]["kernel"]
        assert kernel.shape == ((3, 3, 3, 64) if adapter == "replicate" else (3, 3, 1, 64))
        merged["params"]["head"]["kernel"] = jnp.eye(512, 7)
        outs.append(jax.jit(net.apply)({"params": merged["params"]}, gray))
    np.testing.assert_allclose(outs[0], outs[1], atol=TOL, rtol=0)


class TinyBackbone(nn.Module):
    """Two conv + BatchNorm stages: a stand-in for an ImageNet backbone in the freezing tests."""

    stages: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        for name in ("stem", "stage1", "stage2")[: self.stages]:
            x = nn.Conv(4, (3, 3), name=f"{name}_conv")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"{name}_bn")(x)
            x = nn.relu(x)
        return x


def _tiny(k=3, stages=2):
    return TransferNet(TinyBackbone(stages), num_classes=k, dropout=0.0)


def _tiny_state(net, seed):
    v = net.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 1)))
    return TrainState(
        jnp.zeros((), jnp.int32), v["params"], v["batch_stats"], {}, jnp.ones((), jnp.float32)
    )


def test_init_from_workdir_with_other_class_count(tmp_path):
    state7 = _tiny_state(_tiny(7), 0)
    ckpts = Checkpoints(Workdir(str(tmp_path / "src")), async_save=False)
    ckpts.save_best(5, state7, {"best_value": 0.5})
    ckpts.close()
    state3 = _tiny_state(_tiny(3), 1)
    cfg = _config()
    cfg.model.init_from = str(tmp_path / "src")
    out = transfer.init_from(cfg, state3, str(tmp_path / "new"))
    stem = lambda s: s.params["backbone"]["stem_conv"]["kernel"]  # noqa: E731
    np.testing.assert_array_equal(stem(out), stem(state7))
    np.testing.assert_array_equal(
        out.batch_stats["backbone"]["stem_bn"]["var"],
        state7.batch_stats["backbone"]["stem_bn"]["var"],
    )
    np.testing.assert_array_equal(out.params["head"]["kernel"], state3.params["head"]["kernel"])
    with pytest.raises(
        CheckpointError, match="missing tensor 'batch_stats/backbone/stage2_bn/mean'"
    ):
        transfer.init_from(cfg, _tiny_state(_tiny(3, stages=3), 2), str(tmp_path / "new2"))


# ------------------------------------------------------------------------------- freezing


def _config(freeze="backbone/stem", unfreeze=0):
    import runpy

    cfg = runpy.run_path("configs/default.py")["get_config"]()
    cfg.model.freeze = freeze
    cfg.train.unfreeze_at_epoch = unfreeze
    cfg.train.num_epochs = 4
    cfg.optim.warmup_epochs = 0.0
    cfg.optim.schedule = "constant"
    cfg.optim.learning_rate = 0.1
    cfg.augment.ops = ""
    return cfg


def _run_steps(cfg, steps_per_epoch, num_steps):
    """States after 0..num_steps real train steps (the builder's program, a tiny model)."""
    program = build(
        cfg,
        num_classes=3,
        image_shape=(8, 8, 1),
        steps_per_epoch=steps_per_epoch,
        norm=(128.0, 64.0),
        model=_tiny(),
    )
    state, step = program.state, program.train_step
    rng = np.random.default_rng(0)
    data = {
        "images": jnp.asarray(rng.integers(0, 256, (8, 8, 8, 1)), jnp.uint8),
        "targets": jnp.asarray(np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]),
    }
    batch = {
        "i": jnp.arange(4, dtype=jnp.int32),
        "j": jnp.arange(4, dtype=jnp.int32),
        "lam": jnp.zeros(4),
        "weight": jnp.ones(4),
    }
    snapshots = [jax.device_get(state)]
    for _ in range(num_steps):
        state, _ = step(state, data, batch)
        snapshots.append(jax.device_get(state))
    return snapshots


def _split(tree, frozen: bool):
    mask = transfer.frozen_mask(tree, transfer.parse_patterns("backbone/stem"))
    leaves = jax.tree.leaves(jax.tree.map(lambda m, x: x if m == frozen else None, mask, tree))
    return [np.asarray(x) for x in leaves]


def _same(a, b) -> bool:
    return all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))


def test_frozen_params_and_bn_stats_are_bitwise_unchanged():
    first, *_, last = _run_steps(_config(), steps_per_epoch=1, num_steps=3)
    for tree in ("params", "batch_stats"):
        a, b = getattr(first, tree), getattr(last, tree)
        assert len(_split(a, True)) == (4 if tree == "params" else 2)
        assert _same(_split(a, True), _split(b, True)), tree
        assert not _same(_split(a, False), _split(b, False)), tree


def test_unfreezing_at_epoch_k_trains_frozen_groups_afterwards():
    snaps = _run_steps(_config(unfreeze=2), steps_per_epoch=1, num_steps=4)
    frozen = [(_split(s.params, True), _split(s.batch_stats, True)) for s in snaps]
    assert _same(frozen[0][0], frozen[2][0]) and _same(frozen[0][1], frozen[2][1])
    assert not _same(frozen[2][0], frozen[3][0]) and not _same(frozen[2][1], frozen[3][1])
    assert len({jax.tree.structure(s.opt_state) for s in snaps}) == 1


def test_freeze_pattern_that_matches_nothing_is_a_config_error():
    with pytest.raises(ConfigError, match="pattern 'stage9' matches no parameter"):
        _run_steps(_config(freeze="stage9"), steps_per_epoch=1, num_steps=0)


def test_resnet50_style_follows_the_source_and_a_mismatch_is_one_line(keras_files, torch_state):
    cfg = _config(freeze="")
    cfg.model.name = "resnet50"
    cfg.model.init_from = keras_files["resnet50"][1][0]
    validate(cfg)
    assert transfer.resolve_style(cfg) == "keras"
    cfg.model.init_from = torch_state[1]
    assert transfer.resolve_style(cfg) == "torch"
    cfg.model.style = "keras"
    with pytest.raises(CheckpointError) as e:
        transfer.init_from(cfg, None, "/nonexistent-workdir")
    assert str(e.value) == (
        f"{torch_state[1]}: torch-style ResNet-50 weights, but model.style resolves to keras; "
        "set --config.model.style=torch (or auto)"
    )
    cfg.train.unfreeze_at_epoch = 3
    with pytest.raises(ConfigError, match="train.unfreeze_at_epoch"):
        validate(cfg)


def test_keras_resnet50_file_with_pre_2019_layer_names_converts(keras_files, tmp_path):
    """keras-applications < 1.0.7 named layers res2a_branch2a, bn_conv1, ... ."""
    import shutil

    import h5py

    legacy = keras_files["resnet50"][1][1]
    old = str(tmp_path / "resnet50_old_names.h5")
    shutil.copy(legacy, old)
    with h5py.File(old, "r+") as f:
        for group in list(f.keys()):
            renamed = convert._old_keras_name(group)
            if renamed != group:
                f.move(group, renamed)
    expected = convert.convert(legacy, "resnet50")
    got = convert.convert(old, "resnet50")
    with h5py.File(old, "r") as f:
        assert "res2a_branch2a" in f and "conv2_block1_1_conv" not in f
    for a, b in zip(jax.tree.leaves(expected["params"]), jax.tree.leaves(got["params"])):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------- ResNet-18


def _torchvision_resnet18_state(seed=0, classes=10) -> dict[str, np.ndarray]:
    """A random state dict with torchvision's resnet18 names and shapes (OIHW kernels)."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def conv(name, o, i, k):
        std = np.sqrt(2.0 / (i * k * k))
        state[f"{name}.weight"] = (rng.normal(size=(o, i, k, k)) * std).astype(np.float32)

    def bn(name, c):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.0, c).astype(np.float32)
        state[f"{name}.bias"] = (rng.normal(size=c) * 0.1).astype(np.float32)
        state[f"{name}.running_mean"] = (rng.normal(size=c) * 0.1).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(3, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inp = 64
    for s in range(4):
        width = 64 * 2**s
        for b in range(2):
            name = f"layer{s + 1}.{b}"
            conv(f"{name}.conv1", width, inp if b == 0 else width, 3)
            bn(f"{name}.bn1", width)
            conv(f"{name}.conv2", width, width, 3)
            bn(f"{name}.bn2", width)
            if s > 0 and b == 0:
                conv(f"{name}.downsample.0", width, inp, 1)
                bn(f"{name}.downsample.1", width)
        inp = width
    state["fc.weight"] = (rng.normal(size=(classes, 512)) * 0.05).astype(np.float32)
    state["fc.bias"] = (rng.normal(size=classes) * 0.1).astype(np.float32)
    return state


def _torchvision_features(state, x_nchw, blocks, bottleneck: bool):
    """torchvision's ResNet (basic or bottleneck blocks) in eval mode up to the pooled features,
    written with lax in its own layouts (NCHW, OIHW, torch's paddings): a reference independent
    of ferjax's modules and converter."""
    from jax import lax

    def conv(x, name, stride, pad):
        w = jnp.asarray(state[f"{name}.weight"])
        return lax.conv_general_dilated(
            x, w, (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW")
        )

    def bn(x, name):
        c = lambda k: jnp.asarray(state[f"{name}.{k}"])[None, :, None, None]  # noqa: E731
        return (x - c("running_mean")) / jnp.sqrt(c("running_var") + 1e-5) * c("weight") + c("bias")

    relu = jax.nn.relu
    x = relu(bn(conv(jnp.asarray(x_nchw), "conv1", 2, 3), "bn1"))
    x = lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), [(0, 0), (0, 0), (1, 1), (1, 1)]
    )
    for s, count in enumerate(blocks):
        for b in range(count):
            name = f"layer{s + 1}.{b}"
            stride = 2 if s > 0 and b == 0 else 1
            if bottleneck:  # torchvision strides the 3x3 convolution
                y = relu(bn(conv(x, f"{name}.conv1", 1, 0), f"{name}.bn1"))
                y = relu(bn(conv(y, f"{name}.conv2", stride, 1), f"{name}.bn2"))
                y = bn(conv(y, f"{name}.conv3", 1, 0), f"{name}.bn3")
            else:
                y = relu(bn(conv(x, f"{name}.conv1", stride, 1), f"{name}.bn1"))
                y = bn(conv(y, f"{name}.conv2", 1, 1), f"{name}.bn2")
            if f"{name}.downsample.0.weight" in state:
                x = bn(conv(x, f"{name}.downsample.0", stride, 0), f"{name}.downsample.1")
            x = relu(y + x)
    return np.asarray(x.mean(axis=(2, 3)))


def _torchvision_resnet18_forward(state, x_nchw):
    """torchvision's resnet18 logits (the lax reference above plus its fc)."""
    features = _torchvision_features(state, x_nchw, (2, 2, 2, 2), bottleneck=False)
    return features @ state["fc.weight"].T + state["fc.bias"]


def test_torchvision_resnet18_converts_and_matches_its_forward(tmp_path):
    """resnet18 with the ImageNet stem loads torchvision weights without an adapter: the
    converted file in ferjax's ResNet gives torchvision's logits (with the fc copied into the
    head); a Keras file is refused in one line."""
    from safetensors.numpy import save_file

    from ferjax.models.resnet import ResNet

    state = _torchvision_resnet18_state()
    path = str(tmp_path / "resnet18.safetensors")
    save_file(state, path)
    converted = convert.convert(path, "resnet18")
    assert converted["meta"]["model"] == "resnet18" and "head_out" not in converted["params"]
    params = dict(converted["params"])
    params["head_out"] = {"kernel": state["fc.weight"].T, "bias": state["fc.bias"]}
    net = ResNet(num_classes=10, stage_sizes=(2, 2, 2, 2), stem="imagenet", dropout=0.0)
    x = _input(2, shape=(2, 64, 64, 3))
    got = np.asarray(net.apply({"params": params, "batch_stats": converted["batch_stats"]}, x))
    ref = _torchvision_resnet18_forward(state, x.transpose(0, 3, 1, 2))
    _report(path, "torchvision reference", got, ref)
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)
    import h5py

    keras_file = str(tmp_path / "r.h5")  # a Keras weight file (keras.applications has no R18)
    with h5py.File(keras_file, "w") as f:
        f.attrs["layer_names"] = [b"conv1_conv"]
    with pytest.raises(CheckpointError) as e:
        convert.convert(keras_file, "resnet18")
    assert str(e.value) == (
        f"{keras_file}: keras.applications has no resnet18; convert a torchvision or timm "
        ".safetensors / .pth file"
    )
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="not a readable HDF5 file"):
        convert.convert(str(broken), "resnet18")
