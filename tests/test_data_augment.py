"""Semantics of each augmentation op on constructed images, TTA, and determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from ferjax.cli.preview import preview_grid
from ferjax.data import augment as A
from ferjax.data.augment import ops
from ferjax.evaluation.predict import make_predict
from ferjax.models import create_model
from ferjax.runtime.errors import ConfigError

KEY = jax.random.PRNGKey(0)


def ramp(h=48, w=48, c=1):
    """float32[h, w, c] test image."""
    return jnp.asarray(np.arange(h * w * c, dtype=np.float32).reshape(h, w, c) % 251)


def test_flip_mirrors_exactly():
    x = ramp()
    assert np.array_equal(A.flip(x, KEY, p=1.0), x[:, ::-1])
    assert np.array_equal(A.flip(x, KEY, p=0.0), x)


def test_shift_moves_content_by_the_sampled_offset():
    x = jnp.zeros((48, 48, 1)).at[20, 30].set(255.0)
    for seed in range(5):
        key = jax.random.PRNGKey(seed)
        offset = np.asarray(jax.random.randint(key, (2,), 0, 9))  # what shift samples
        out = np.asarray(A.shift(x, key, pad=4))
        assert np.argwhere(out == 255.0).tolist() == [[20 + 4 - offset[0], 30 + 4 - offset[1], 0]]


def test_rotate_90_equals_rot90_up_to_interpolation():
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (48, 48, 3)).astype(np.float32))
    np.testing.assert_allclose(A.rotate_by(x, 90.0), np.rot90(np.asarray(x), k=1), atol=1e-3)
    np.testing.assert_allclose(A.rotate_by(x, -90.0), np.rot90(np.asarray(x), k=-1), atol=1e-3)
    np.testing.assert_allclose(A.rotate_by(x, 0.0), x, atol=1e-4)
    # rotate() draws its angle from U(-degrees, degrees) with its key.
    angle = jax.random.uniform(KEY, (), minval=-10.0, maxval=10.0)
    np.testing.assert_array_equal(A.rotate(x, KEY, degrees=10.0), A.rotate_by(x, angle))


def test_erase_zeroes_one_box():
    x = jnp.full((48, 48, 3), 100.0)
    out = np.asarray(A.random_erase(x, KEY, p=1.0, min_area=0.1, max_area=0.1))
    assert (out == 0.0).all(axis=-1).sum() * 3 == (out == 0.0).sum()  # all channels erased
    out = out[..., 0]
    zero = np.argwhere(out == 0.0)
    (r0, c0), (r1, c1) = zero.min(0), zero.max(0)
    assert (out[r0 : r1 + 1, c0 : c1 + 1] == 0).all()  # a filled rectangle
    assert abs(len(zero) - 0.1 * 48 * 48) < 0.05 * 48 * 48
    assert (out[out != 0] == 100.0).all()
    assert np.array_equal(A.random_erase(x, KEY, p=0.0), x)


def test_photometric_ops():
    x = ramp()
    key = jax.random.PRNGKey(3)
    delta = float(jax.random.uniform(key, (), minval=-25.0, maxval=25.0))
    np.testing.assert_allclose(A.brightness(x, key), x + delta, rtol=1e-6)
    c = np.asarray(A.contrast(x, key))
    assert c.mean() == pytest.approx(float(x.mean()), rel=1e-4)
    np.testing.assert_allclose(A.gamma(x, key, lower=1.0, upper=1.0), x, rtol=1e-5)
    assert A.gaussian_noise(x, key).std() != x.std()
    rough = np.random.default_rng(0).uniform(0, 255, (48, 48, 1)).astype(np.float32)
    blurred = np.asarray(A.gaussian_blur(jnp.asarray(rough), key, sigma=1.0, min_sigma=1.0, p=1.0))
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.8 * np.abs(np.diff(rough, axis=1)).mean()
    assert blurred.mean() == pytest.approx(rough.mean(), rel=0.01)


def test_crop_full_scale_is_identity():
    x = ramp()
    out = A.random_resized_crop(x, KEY, min_scale=1.0, max_ratio=1.0)
    np.testing.assert_allclose(out, x, atol=1e-3)


def test_mixup_and_cutmix_targets_sum_to_one():
    images = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (16, 48, 48, 3)), jnp.float32)
    targets = jax.nn.one_hot(jnp.arange(16) % 3, 3)
    for op in (A.mixup, A.cutmix):
        out, t = op(images, targets, KEY)
        assert out.shape == images.shape and t.shape == targets.shape
        np.testing.assert_allclose(t.sum(-1), 1.0, atol=1e-6)
        assert not np.array_equal(t, targets)


def test_chain_is_deterministic_and_preserves_shape():
    aug = jax.jit(A.make_augment("flip|shift(pad=4)|rotate(degrees=10)|erase(p=0.5)|mixup"))
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (8, 48, 48, 1)), jnp.float32)
    t = jax.nn.one_hot(jnp.arange(8) % 7, 7)
    a1, t1 = aug(x, t, KEY)
    a2, t2 = aug(x, t, KEY)
    a3, _ = aug(x, t, jax.random.PRNGKey(1))
    assert a1.shape == x.shape and a1.dtype == jnp.float32 and t1.shape == t.shape
    assert np.array_equal(a1, a2) and np.array_equal(t1, t2)
    assert not np.array_equal(a1, a3)


def test_bad_specs_are_one_line_errors():
    with pytest.raises(ConfigError) as e:
        A.parse_ops("flip|flap")
    assert str(e.value).startswith("augment.ops: unknown op 'flap'; known ops: ")
    assert str(e.value).endswith("; did you mean 'flip'?")
    with pytest.raises(ConfigError) as e:
        A.parse_ops("shift(pd=3)")
    assert str(e.value) == (
        "augment.ops: shift has no argument 'pd' (it takes pad); did you mean 'pad'?"
    )
    with pytest.raises(ConfigError) as e:
        A.parse_ops("shift(pad=2.5)")
    assert str(e.value) == "augment.ops: shift(pad=...) must be an integer, got '2.5'"
    with pytest.raises(ConfigError) as e:
        A.parse_ops("rotate(degrees=x)")
    assert str(e.value) == "augment.ops: rotate(degrees=...) must be a number, got 'x'"


def test_arguments_keep_their_types():
    chain = A.parse_ops("flip|shift(pad=2)|rotate(degrees=15)|erase(p=1)")
    assert chain == [("flip", {}), ("shift", {"pad": 2}), ("rotate", {"degrees": 15.0}),
                     ("erase", {"p": 1.0})]  # fmt: skip
    assert type(chain[1][1]["pad"]) is int and type(chain[2][1]["degrees"]) is float


def test_registering_an_op_twice_is_an_error():
    with pytest.raises(ValueError, match="augment.ops: 'flip' is registered twice"):
        A.register("flip")(lambda image, key: image)
    assert A.OPS.get("flip").fn is A.flip


def test_colour_ops():
    rgb = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (16, 16, 3)), jnp.float32)
    gray = rgb[..., :1]
    for op in (A.saturation, A.hue):
        assert np.array_equal(op(gray, KEY), gray)  # grayscale: unchanged
        assert not np.allclose(op(rgb, KEY), rgb)
    grey = np.asarray(ops._luma(rgb))
    np.testing.assert_allclose(A.saturation(rgb, KEY, lower=0.0, upper=0.0), np.repeat(grey, 3, -1),
                               atol=1e-3)  # fmt: skip
    np.testing.assert_allclose(A.hue(rgb, KEY, degrees=0.0), rgb, atol=1e-3)
    # A hue rotation keeps the grey level of every pixel.
    np.testing.assert_allclose(ops._luma(A.hue(rgb, KEY, degrees=60.0)), grey, atol=1e-2)
    gains = np.asarray(A.channel_gain(rgb, KEY, delta=0.2)) / np.asarray(rgb)
    assert np.allclose(gains, gains[0, 0], rtol=1e-5) and len(set(gains[0, 0].round(5))) == 3


def test_tta_of_flip_invariant_model_equals_no_tta():
    """A model that sees only horizontally symmetric features gives the same output with flip
    TTA as without."""

    class Symmetric:
        def apply(self, variables, x, train=False):
            sym = x + x[:, :, ::-1]
            return jnp.stack([sym.mean((1, 2, 3)), (sym**2).mean((1, 2, 3))], -1)

    images = jnp.asarray(np.random.default_rng(1).integers(0, 255, (6, 48, 48, 1)), jnp.uint8)
    idx = jnp.arange(6)
    plain = make_predict(Symmetric(), (100.0, 50.0), "none")({}, images, idx)
    flipped = make_predict(Symmetric(), (100.0, 50.0), "flip")({}, images, idx)
    np.testing.assert_allclose(plain, flipped, rtol=1e-6)


def test_augmentation_only_in_training():
    """Training applies the ops (the step's inputs change with them); evaluation does not
    (predictions do not depend on augment.ops)."""
    config = tiny_config()
    model = create_model(config, 7)
    images = jnp.asarray(np.random.default_rng(2).integers(0, 255, (4, 48, 48, 1)), jnp.uint8)
    variables = jax.jit(model.init)(KEY, jnp.zeros((1, 48, 48, 1)))  # one program, not per op
    out = make_predict(model, (0.0, 1.0), "none")(variables, images, jnp.arange(4))
    x = images.astype(jnp.float32)
    np.testing.assert_allclose(out, jax.nn.softmax(model.apply(variables, x)), rtol=1e-5)


def test_preview_grid_rows_are_originals_then_draws():
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1), dtype=np.uint8)
    grid = preview_grid(images, "flip(p=1.0)", draws=2)
    assert grid.shape == (3 * 48, 3 * 48, 1) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:48, :48], images[0])
    np.testing.assert_array_equal(grid[48:96, 48:96], images[1][:, ::-1])


# ----------------------------------------------------------------------- automatic policies


def faces(b, h, w, c, seed=0):
    """float32[b, h, w, c] smooth-ish test images in 0..255."""
    rng = np.random.default_rng(seed)
    base = np.linspace(30, 220, h * w, dtype=np.float32).reshape(1, h, w, 1)
    return jnp.asarray(np.clip(base + rng.uniform(-30, 30, (b, h, w, c)), 0, 255), jnp.float32)


def test_policies_parse_and_check_their_arguments():
    assert A.parse_ops("trivial_augment") == [("trivial_augment", {})]
    chain = A.parse_ops("flip|rand_augment(n=2, m=9)")
    assert chain == [("flip", {}), ("rand_augment", {"n": 2, "m": 9})]
    assert type(chain[1][1]["n"]) is int and type(chain[1][1]["m"]) is int
    assert A.parse_ops("rand_augment") == [("rand_augment", {})]
    with pytest.raises(ConfigError) as e:
        A.parse_ops("rand_augment(m=9.5)")
    assert str(e.value) == "augment.ops: rand_augment(m=...) must be an integer, got '9.5'"
    with pytest.raises(ConfigError) as e:
        A.parse_ops("rand_augment(n=two)")
    assert str(e.value) == "augment.ops: rand_augment(n=...) must be an integer, got 'two'"
    with pytest.raises(ConfigError) as e:
        A.parse_ops("rand_augment(m=31)")
    assert str(e.value) == "augment.ops: rand_augment(m=...) must be in 0..30, got 31"
    with pytest.raises(ConfigError) as e:
        A.parse_ops("rand_augment(n=-1)")
    assert str(e.value) == "augment.ops: rand_augment(n=...) must be >= 0, got -1"
    with pytest.raises(ConfigError) as e:
        A.parse_ops("trivial_augment(m=3)")
    assert str(e.value) == "augment.ops: trivial_augment has no argument 'm' (it takes none)"


def test_policy_op_lists():
    gray, colour = A.policy_ops(1), A.policy_ops(3)
    assert "identity" in gray and "saturation" not in gray and "hue" not in gray
    assert colour == gray + ["saturation", "hue"]
    # Every op is the identity at level 0 and keeps shape and dtype at level 1.
    for c in (1, 3):
        x = faces(1, 48, 40, c)[0]
        for name in A.policy_ops(c):
            fn = A.POLICY_OPS[name][0]
            np.testing.assert_allclose(fn(x, KEY, 0.0), x, atol=1e-2, err_msg=name)
            out = fn(x, KEY, 1.0)
            assert out.shape == x.shape and out.dtype == x.dtype, name
            if name != "identity":
                assert not np.allclose(out, x, atol=1e-2), name


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("spec", ["trivial_augment", "rand_augment(n=2, m=9)"])
def test_policies_shape_range_and_determinism(spec, c):
    ((name, params),) = A.parse_ops(spec)
    op = A.OPS.get(name).fn
    run = jax.jit(jax.vmap(lambda x, k: op(x, k, **params)))
    x = faces(32, 48, 48, c)
    keys = jax.random.split(KEY, 32)
    out = run(x, keys)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 255.0
    np.testing.assert_array_equal(out, run(x, keys))  # same keys, same output
    same = run(jnp.broadcast_to(x[:1], x.shape), keys)  # one image, 32 keys
    changes = np.asarray(jnp.abs(same - x[0]).mean(axis=(1, 2, 3)))
    assert len(np.unique(changes.round(3))) >= 16  # the draw varies per example
    # Per example: the unbatched op with the same key.
    one = jax.jit(lambda x, k: op(x, k, **params))
    np.testing.assert_allclose(out[5], one(x[5], keys[5]), atol=1e-3)


def test_trivial_augment_draws_one_op_of_the_list():
    """trivial_augment(x, key) is POLICY_OPS[i](x, k, level) with i and level drawn from key,
    and the drawn op varies over examples."""
    x = faces(1, 48, 48, 3)[0]
    names = A.policy_ops(3)
    drawn = set()
    for seed in range(32):
        key = jax.random.PRNGKey(seed)
        k_level, k_draw = jax.random.split(key)
        k_op, k_args = jax.random.split(k_draw)
        i = int(jax.random.randint(k_op, (), 0, len(names)))
        level = jax.random.uniform(k_level, ())
        expected = jnp.clip(A.POLICY_OPS[names[i]][0](x, k_args, level), 0, 255)
        np.testing.assert_allclose(A.trivial_augment(x, key), expected, atol=1e-3)
        drawn.add(names[i])
    assert len(drawn) >= 6


def test_rand_augment_magnitude_scales_the_change():
    x = faces(32, 48, 48, 1)
    keys = jax.random.split(KEY, 32)

    def change(m):
        out = jax.jit(jax.vmap(lambda i, k: A.rand_augment(i, k, n=2, m=m)))(x, keys)
        return float(jnp.abs(out - x).mean())

    weak, strong = change(0), change(30)
    assert weak < 0.1 and strong > 10.0
    np.testing.assert_array_equal(A.rand_augment(x[0], KEY, n=0), x[0])


@pytest.mark.parametrize("shape", [(8, 48, 48, 1), (4, 64, 64, 3)])
def test_policies_run_in_the_chain(shape):
    x = faces(*shape)
    t = jax.nn.one_hot(jnp.arange(shape[0]) % 7, 7)
    aug = jax.jit(A.make_augment("flip|trivial_augment|rand_augment(n=2, m=9)|mixup"))
    a1, t1 = aug(x, t, KEY)
    a2, _ = aug(x, t, KEY)
    a3, _ = aug(x, t, jax.random.PRNGKey(1))
    assert a1.shape == x.shape and a1.dtype == jnp.float32 and t1.shape == t.shape
    assert float(a1.min()) >= 0.0 and float(a1.max()) <= 255.0
    assert np.array_equal(a1, a2) and not np.array_equal(a1, a3)
