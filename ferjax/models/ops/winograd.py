"""Winograd F(m x m, 3 x 3) convolutions for 3x3, stride-1, SAME, NHWC layers on CPU.

A direct 3x3 convolution costs 9 multiply-adds per output pixel and channel pair; Winograd's
minimal filtering computes an m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2
multiplies: 4 per pixel for F(2x2) (2.25x fewer), 2.78 for F(3x3), 2.25 for F(4x4) (4x fewer).
The multiplies become (m+2)^2 independent GEMMs [tiles, Cin] x [Cin, Cout] (lax.dot_general,
which XLA's CPU backend runs near its matmul peak), framed by cheap linear transforms:

    V = B^T d B   (input tiles, per channel)      U = G g G^T   (kernel, per Cin/Cout pair)
    M[k] = V[k] @ U[k]   for each of the (m+2)^2 positions k
    Y = A^T M A   (output tiles)

The batch is processed in chunks of whole images (lax.map / lax.scan) so that a chunk's V and M
stay in cache: without chunking the transforms' temporaries (4x the activation for F(2x2))
cost more memory traffic than the GEMMs save.

Gradients (jax.custom_vjp): the input gradient of a stride-1 SAME 3x3 convolution is again such
a convolution, of the output cotangent with the spatially flipped, in/out-transposed kernel, so
it runs through the same Winograd forward. The weight gradient is chosen by `weight_grad`:
"winograd" (Winograd-domain GEMMs dU[k] = V[k]^T (A dY A^T)[k], accumulated over chunks, then
dW = G^T dU G), "gemm" (the im2col GEMMs of ferjax.models.ops.conv.weight_grad) or "xla"
(XLA's own).

Accuracy (float32, bench.conv_layers --accuracy): F(2x2) is as accurate as a direct convolution;
F(4x4) multiplies rounding errors by its transforms' larger coefficients (larger relative
errors, too small to affect training; bench/README.md).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Target bytes of one chunk's transformed input V [(m+2)^2, tiles, Cin] (L2/L3-sized).
CHUNK_BYTES = 8 << 20
# Fewest GEMM rows (tiles) per chunk.
MIN_TILES = 512
TILES = (2, 3, 4)
WEIGHT_GRADS = ("winograd", "gemm", "xla")
_DN = ("NHWC", "HWIO", "NHWC")


class Transform(NamedTuple):
    """Winograd F(m, 3) matrices (float64): bt [a, a], g [a, 3], at [m, a], with a = m + 2.
    1-D correlation: y = at @ ((g @ k) * (bt @ d)) for d [a], k [3] -> y [m]."""

    m: int
    bt: np.ndarray
    g: np.ndarray
    at: np.ndarray


def _cook_toom(m: int, points: tuple[float, ...]) -> Transform:
    """F(m, 3) from m + 1 finite interpolation points and the point at infinity: A^T and G by
    the Cook-Toom construction, B^T solved so that the correlation identity holds exactly."""
    a = m + 2
    p = np.asarray(points, np.float64)
    assert len(p) == a - 1
    at = np.zeros((m, a))
    at[:, : a - 1] = p[None, :] ** np.arange(m)[:, None]
    at[m - 1, a - 1] = 1.0
    f = np.array([np.prod([pj - pl for pl in p if pl != pj]) for pj in p])
    g = np.zeros((a, 3))
    g[: a - 1] = p[:, None] ** np.arange(3)[None, :] / f[:, None]
    g[a - 1, 2] = 1.0
    # sum_j at[i, j] g[j, k] bt[j, l] = [l == i + k] for all i, k: a linear system per column l.
    coeff = np.einsum("ij,jk->ikj", at, g).reshape(m * 3, a)
    target = np.zeros((m * 3, a))
    for i in range(m):
        for k in range(3):
            target[i * 3 + k, i + k] = 1.0
    bt = np.linalg.lstsq(coeff, target, rcond=None)[0]
    bt[np.abs(bt) < 1e-12] = 0.0
    return Transform(m, np.round(bt, 12), g, at)


# F(2, 3) and F(4, 3) as in Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural
# Networks"; F(3, 3) from the points 0, 1, -1, 2.
TRANSFORMS = {
    2: Transform(
        2,
        np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
    ),
    3: _cook_toom(3, (0.0, 1.0, -1.0, 2.0)),
    4: Transform(
        4,
        np.array(
            [
                [4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1],
            ],
            np.float64,
        ),
        np.array(
            [
                [1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1],
            ],
            np.float64,
        ),
        np.array(
            [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
            np.float64,
        ),
    ),
}


class Plan(NamedTuple):
    """Static settings of one Winograd convolution (hashable: a custom_vjp nondiff argument)."""

    tile: int = 2
    weight_grad: str = "winograd"
    chunk_bytes: int = CHUNK_BYTES
    gemm_dtype: str = "float32"


# ----------------------------------------------------------------------------- transforms


def _combine(matrix: np.ndarray, parts: list[jax.Array]) -> list[jax.Array]:
    """[sum_j matrix[i, j] * parts[j] for each row i], skipping zeros and multiplies by +-1."""
    out = []
    for row in matrix:
        acc = None
        for c, p in zip(row, parts, strict=True):
            if c == 0:
                continue
            term = p if c == 1 else -p if c == -1 else p * jnp.asarray(c, p.dtype)
            acc = term if acc is None else acc + term
        out.append(acc if acc is not None else jnp.zeros_like(parts[0]))
    return out


def _grid(h: int, w: int, m: int) -> tuple[int, int]:
    return -(-h // m), -(-w // m)


def input_transform(xp: jax.Array, t: Transform, nh: int, nw: int) -> jax.Array:
    """Padded input xp [B, m*nh + 2, m*nw + 2, C] -> V [a*a, B*nh*nw, C] (a = m + 2).

    Two separable passes, along W first (the pass is materialised: XLA runs that faster than
    one fusion recomputing it for each of the a*a outputs), then along H."""
    a, m = t.bt.shape[0], t.m
    c = xp.shape[-1]
    cols = [lax.slice_in_dim(xp, j, j + m * (nw - 1) + 1, m, axis=2) for j in range(a)]
    cols = list(jnp.stack(_combine(t.bt, cols)))
    v: list[list[jax.Array]] = [[] for _ in range(a)]
    for col in cols:
        rows = [lax.slice_in_dim(col, j, j + m * (nh - 1) + 1, m, axis=1) for j in range(a)]
        for k, vk in enumerate(_combine(t.bt, rows)):
            v[k].append(vk)
    return jnp.stack([vkl for vk in v for vkl in vk]).reshape(a * a, -1, c)


def output_transform(mm: jax.Array, t: Transform, b: int, nh: int, nw: int) -> jax.Array:
    """GEMM results M [a*a, B*nh*nw, C] -> Y [B, m*nh, m*nw, C].

    One small GEMM with kron(A^T, A^T) [m*m, a*a] (multi-threaded, reads M once) and a
    transpose into NHWC: faster than separable passes, which XLA fuses into one loop that
    re-reads M for every output position."""
    a, m = t.bt.shape[0], t.m
    c = mm.shape[-1]
    kron = jnp.asarray(np.kron(t.at, t.at), mm.dtype)
    y = lax.dot_general(kron, mm.reshape(a * a, -1), (((1,), (0,)), ((), ())))
    y = y.reshape(m, m, b, nh, nw, c)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(b, nh * m, nw * m, c)


def output_transform_adjoint(dy: jax.Array, t: Transform, nh: int, nw: int) -> jax.Array:
    """Adjoint of output_transform: dY [B, m*nh, m*nw, C] -> dM [a*a, B*nh*nw, C].

    Separable passes with the first one materialised; the kron GEMM used for the forward
    needs a transpose of dY into [m*m, ...] that XLA copies slowly enough to make the weight
    gradient slower than with these passes."""
    a, m = t.bt.shape[0], t.m
    b, c = dy.shape[0], dy.shape[-1]
    tiles = dy.reshape(b, nh, m, nw, m, c)
    a_mat = t.at.T
    rows = list(jnp.stack(_combine(a_mat, [tiles[:, :, p] for p in range(m)])))
    dm = []
    for r in rows:
        dm += _combine(a_mat, [r[:, :, :, q] for q in range(m)])
    return jnp.stack(dm).reshape(a * a, -1, c)


def kernel_transform(w: jax.Array, t: Transform, flip: bool = False) -> jax.Array:
    """HWIO w [3, 3, Cin, Cout] -> U [a*a, Cin, Cout] = G w G^T per channel pair, as one GEMM
    kron(G, G) [a*a, 9] x w [9, Cin*Cout] (no transposes: an einsum over the HWIO axes spent
    its time in transposes for wide kernels). flip: of the kernel rotated by 180 degrees (the
    input gradient's), still [a*a, Cin, Cout]: the GEMM then contracts over Cout."""
    g = t.g[:, ::-1] if flip else t.g
    kron = jnp.asarray(np.kron(g, g), w.dtype)
    u = jnp.dot(kron, w.reshape(9, -1), precision=lax.Precision.HIGHEST)
    return u.reshape(kron.shape[0], *w.shape[2:])


def kernel_transform_adjoint(du: jax.Array, t: Transform) -> jax.Array:
    """Adjoint of kernel_transform: dU [a*a, Cin, Cout] -> dW [3, 3, Cin, Cout] = G^T dU G."""
    kron = jnp.asarray(np.kron(t.g, t.g).T, du.dtype)
    dw = jnp.dot(kron, du.reshape(du.shape[0], -1), precision=lax.Precision.HIGHEST)
    return dw.reshape(3, 3, *du.shape[1:])


# ----------------------------------------------------------------------------- convolution


def auto_tile(h: int, w: int) -> int:
    """Tile 2 or 4, whichever needs fewer GEMM multiplies for an h x w output ((m+2)^2 per
    m x m tile, counting the padded border tiles; 48, 24, 12 -> 4, 6 -> 2: a tie goes to the
    smaller, more accurate tile). Tile 3 is never picked: its transforms (coefficients 2 and
    3) cost more than its fewer multiplies save (slower than tile 2 where measured;
    `python -m bench.conv_layers --impls wino2,wino3`)."""
    return min((2, 4), key=lambda m: ((m + 2) ** 2 * _grid(h, w, m)[0] * _grid(h, w, m)[1], m))


def _chunk_images(batch: int, tiles_per_image: int, bytes_per_image: int, chunk_bytes: int) -> int:
    """Images per chunk: the largest divisor of `batch` within chunk_bytes of V, but at least
    MIN_TILES GEMM rows (with many channels the GEMMs, not the transforms, dominate, and short
    GEMMs re-read the large U [a*a, Cin, Cout] for every chunk)."""
    want = max(1, chunk_bytes // max(bytes_per_image, 1), -(-MIN_TILES // tiles_per_image))
    return max(d for d in range(1, min(batch, want) + 1) if batch % d == 0)


def _pad_for_tiles(x: jax.Array, m: int) -> jax.Array:
    """x [B, H, W, C] -> [B, m*nh + 2, m*nw + 2, C]: SAME padding plus the border tiles."""
    h, w = x.shape[1:3]
    nh, nw = _grid(h, w, m)
    return jnp.pad(x, ((0, 0), (1, m * nh + 1 - h), (1, m * nw + 1 - w), (0, 0)))


def _gemm(v: jax.Array, u: jax.Array, dtype: str, flip: bool = False) -> jax.Array:
    """[K, T, Cin] x [K, Cin, Cout] -> float32 [K, T, Cout] (bfloat16 operands: f32 sums).
    flip: u is a flipped kernel's [K, Cout, Cin] and the GEMM contracts over its last axis."""
    if dtype != "float32":
        v, u = v.astype(dtype), u.astype(dtype)
    dims = (((2,), (2 if flip else 1,)), ((0,), (0,)))
    return lax.dot_general(v, u, dims, preferred_element_type=jnp.float32)


def _conv_chunk(
    xc: jax.Array, u: jax.Array, t: Transform, dtype: str, flip: bool = False
) -> jax.Array:
    """Winograd convolution of one chunk xc [b, H, W, Cin] with U [a*a, Cin, Cout] (flip: a
    flipped kernel's U [a*a, Cout, Cin], see kernel_transform)."""
    b, h, w = xc.shape[:3]
    nh, nw = _grid(h, w, t.m)
    v = input_transform(_pad_for_tiles(xc, t.m), t, nh, nw)
    y = output_transform(_gemm(v, u, dtype, flip), t, b, nh, nw)
    return y[:, :h, :w]


def _chunking(x: jax.Array, channels: int, plan: Plan) -> int:
    b, h, w = x.shape[:3]
    nh, nw = _grid(h, w, plan.tile)
    a = plan.tile + 2
    return _chunk_images(b, nh * nw, a * a * nh * nw * channels * 4, plan.chunk_bytes)


def _forward(x: jax.Array, w: jax.Array, plan: Plan, flip: bool = False) -> jax.Array:
    """SAME convolution of x [B, H, W, C] with w [3, 3, C, Cout] (flip: with w rotated by 180
    degrees and transposed, i.e. w [3, 3, Cout, C]: the input gradient's convolution)."""
    t = TRANSFORMS[plan.tile]
    b, h, wd, cin = x.shape
    u = kernel_transform(w.astype(jnp.float32), t, flip)
    chunk = _chunking(x, cin, plan)

    def conv(xc):
        return _conv_chunk(xc, u, t, plan.gemm_dtype, flip).astype(x.dtype)

    if chunk == b:
        return conv(x)
    y = lax.map(conv, x.reshape(b // chunk, chunk, h, wd, cin))
    return y.reshape(b, h, wd, -1)


def _weight_grad_chunk(xc: jax.Array, dyc: jax.Array, t: Transform, dtype: str) -> jax.Array:
    """dU [a*a, Cin, Cout] = V^T dM of one chunk (float32)."""
    b, h, w = xc.shape[:3]
    nh, nw = _grid(h, w, t.m)
    v = input_transform(_pad_for_tiles(xc, t.m), t, nh, nw)
    dyp = jnp.pad(dyc, ((0, 0), (0, t.m * nh - h), (0, t.m * nw - w), (0, 0)))
    dm = output_transform_adjoint(dyp, t, nh, nw)
    if dtype != "float32":
        v, dm = v.astype(dtype), dm.astype(dtype)
    return lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)


def _backward(x: jax.Array, w: jax.Array, dy: jax.Array, plan: Plan):
    """(dx, dW) in one pass over batch chunks: each chunk of dy is read once for the input
    gradient (a Winograd convolution with the flipped kernel) and for the weight gradient
    (Winograd-domain GEMMs, accumulated in float32)."""
    t = TRANSFORMS[plan.tile]
    a = t.m + 2
    b, h, wd, cin = x.shape
    cout = dy.shape[-1]
    u_flip = kernel_transform(w.astype(jnp.float32), t, flip=True)

    def body(acc, operands):
        xc, dyc = operands
        dxc = _conv_chunk(dyc, u_flip, t, plan.gemm_dtype, flip=True).astype(x.dtype)
        return acc + _weight_grad_chunk(xc, dyc, t, plan.gemm_dtype), dxc

    acc = jnp.zeros((a * a, cin, cout), jnp.float32)
    chunk = _chunking(x, max(cin, cout), plan)
    if chunk == b:
        du, dx = body(acc, (x, dy))
    else:
        xs = x.reshape(b // chunk, chunk, h, wd, cin)
        dys = dy.reshape(b // chunk, chunk, h, wd, cout)
        du, dx = lax.scan(body, acc, (xs, dys))
        dx = dx.reshape(x.shape)
    return dx, kernel_transform_adjoint(du, t)


def weight_grad_winograd(x: jax.Array, dy: jax.Array, plan: Plan) -> jax.Array:
    """dW float32 [3, 3, Cin, Cout] of the stride-1 SAME 3x3 convolution, as Winograd-domain
    GEMMs dU[k] = V[k]^T dM[k] summed over batch chunks; x [B, H, W, Cin], dy [B, H, W, Cout]."""
    t = TRANSFORMS[plan.tile]
    a = t.m + 2
    b, h, wd, cin = x.shape
    cout = dy.shape[-1]
    acc = jnp.zeros((a * a, cin, cout), jnp.float32)
    chunk = _chunking(x, max(cin, cout), plan)
    if chunk == b:
        du = acc + _weight_grad_chunk(x, dy, t, plan.gemm_dtype)
    else:
        xs = x.reshape(b // chunk, chunk, h, wd, cin)
        dys = dy.reshape(b // chunk, chunk, h, wd, cout)
        body = lambda acc, o: (acc + _weight_grad_chunk(*o, t, plan.gemm_dtype), None)
        du, _ = lax.scan(body, acc, (xs, dys))
    return kernel_transform_adjoint(du, t)


def _xla_conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _winograd_conv(x, w, plan):
    return _forward(x, w, plan)


def _winograd_conv_fwd(x, w, plan):
    return _forward(x, w, plan), (x, w)


def _winograd_conv_bwd(plan, res, dy):
    from ferjax.models.ops.conv import weight_grad

    x, w = res
    if plan.weight_grad == "winograd":
        dx, dw = _backward(x, w, dy, plan)
        return dx, dw.astype(w.dtype)
    dx = _forward(dy, w, plan, flip=True).astype(x.dtype)
    if plan.weight_grad == "gemm":
        dw = weight_grad(x, dy, (3, 3), (1, 1), ((1, 1), (1, 1)))
    else:
        dw = jax.vjp(lambda w_: _xla_conv(x, w_), w)[1](dy)[0]
    return dx, dw.astype(w.dtype)


_winograd_conv.defvjp(_winograd_conv_fwd, _winograd_conv_bwd)


def winograd_conv3x3(
    x: jax.Array,
    w: jax.Array,
    tile: int = 2,
    weight_grad: str = "winograd",
    chunk_bytes: int = CHUNK_BYTES,
    gemm_dtype: str = "float32",
) -> jax.Array:
    """SAME, stride-1 convolution of x [B, H, W, Cin] with a 3x3 HWIO kernel w [3, 3, Cin, Cout]
    -> [B, H, W, Cout] in x's dtype, by Winograd F(tile x tile, 3 x 3) (tile 2, 3 or 4; 0: the
    tile with the fewest multiplies for this size, auto_tile).

    Value and gradients equal lax.conv_general_dilated's up to float32 rounding (see the module
    docstring for F(4x4)'s larger error). weight_grad: winograd | gemm | xla (how dW is
    computed). gemm_dtype: float32, or bfloat16 to run the GEMMs on bfloat16 operands with
    float32 accumulation (an option for CPUs with AVX-512 BF16; less accurate)."""
    if w.shape[:2] != (3, 3) or x.ndim != 4 or w.shape[2] != x.shape[-1]:
        raise ValueError(f"winograd_conv3x3: x {x.shape}, w {w.shape}: need NHWC and 3x3 HWIO")
    if tile == 0:
        tile = auto_tile(*x.shape[1:3])
    if tile not in TILES:
        raise ValueError(f"winograd_conv3x3: tile {tile}, expected 0 (auto) or one of {TILES}")
    if weight_grad not in WEIGHT_GRADS:
        raise ValueError(f"winograd_conv3x3: weight_grad {weight_grad!r}, one of {WEIGHT_GRADS}")
    return _winograd_conv(x, w, Plan(tile, weight_grad, int(chunk_bytes), str(gemm_dtype)))
