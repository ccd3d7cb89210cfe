import pytest
import torch

from deepsim.warp import (
    affine_displacement,
    compose,
    compose_affine,
    integrate_velocity,
    resize_displacement,
    warp,
)


def _blob(shape):
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    centre = [n / 2 for n in shape]
    r2 = sum((g - c) ** 2 / 9.0 for g, c in zip(grids, centre))
    return torch.exp(-r2)[None, None]


@pytest.mark.parametrize("shape", [(24, 20), (12, 14, 10)])
def test_identity_warp_returns_input(shape):
    img = torch.rand(2, 3, *shape)
    disp = torch.zeros(2, len(shape), *shape)
    assert torch.allclose(warp(img, disp), img, atol=1e-5)


@pytest.mark.parametrize("shape", [(24, 20), (14, 16, 12)])
def test_constant_translation_moves_content_the_right_way(shape):
    img = _blob(shape)
    d = len(shape)
    for axis in range(d):
        disp = torch.zeros(1, d, *shape, dtype=torch.float64)
        disp[:, axis] = 2.0  # out(x) = in(x + 2): content moves towards lower indices by 2
        out = warp(img, disp)
        expected = torch.roll(img, shifts=-2, dims=2 + axis)
        inner = [slice(None), slice(None)] + [slice(3, n - 3) for n in shape]
        assert torch.allclose(out[tuple(inner)], expected[tuple(inner)], atol=1e-6)
        peak_in = torch.tensor(divmod_index(img.argmax().item(), shape))
        peak_out = torch.tensor(divmod_index(out.argmax().item(), shape))
        assert (peak_in - peak_out)[axis] == 2


def divmod_index(flat, shape):
    idx = []
    for n in reversed(shape):
        flat, r = divmod(flat, n)
        idx.append(r)
    return list(reversed(idx))


def test_nearest_keeps_labels_integral():
    labels = torch.randint(0, 5, (1, 1, 16, 16)).float()
    disp = torch.randn(1, 2, 16, 16) * 2
    out = warp(labels, disp, mode="nearest")
    assert torch.equal(out, out.round())
    assert set(out.unique().tolist()) <= set(labels.unique().tolist())


def test_warp_rejects_bad_shapes():
    with pytest.raises(ValueError, match="channels"):
        warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="spatial shape"):
        warp(torch.zeros(1, 1, 8, 9), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="mode"):
        warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), mode="cubic")


def test_warp_gradcheck_float64():
    img = torch.rand(1, 1, 5, 6, dtype=torch.float64)
    disp = (torch.rand(1, 2, 5, 6, dtype=torch.float64) - 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u: warp(img, u), (disp,), eps=1e-6, atol=1e-4)


@pytest.mark.parametrize("dims", [2, 3])
def test_integrate_constant_velocity_is_translation(dims):
    shape = (16,) * dims
    v = torch.zeros(1, dims, *shape)
    v[:, 0] = 1.5
    disp = integrate_velocity(v, 7)
    inner = [slice(None), slice(None)] + [slice(4, 12)] * dims
    assert torch.allclose(disp[tuple(inner)], v[tuple(inner)], atol=1e-4)


def test_integrate_velocity_gives_invertible_map():
    torch.manual_seed(0)
    v = torch.nn.functional.interpolate(torch.randn(1, 2, 4, 4) * 2, size=(32, 32), mode="bilinear")
    disp = integrate_velocity(v, 7)
    inv = integrate_velocity(-v, 7)
    roundtrip = compose(inv, disp)  # exp(-v) after exp(v) ~ identity
    assert disp.abs().max() > 1.5  # a real deformation
    assert roundtrip[:, :, 6:-6, 6:-6].abs().max() < 0.2
    assert roundtrip.abs().mean() < 0.03


@pytest.mark.parametrize("dims", [2, 3])
def test_affine_composition(dims):
    shape = (10,) * dims
    a = torch.eye(dims + 1, dtype=torch.float64)[None]
    a[0, :dims, :dims] += (
        0.05 * torch.arange(dims * dims, dtype=torch.float64).view(dims, dims) / dims
    )
    a[0, :dims, dims] = 0.7
    u = torch.zeros(1, dims, *shape, dtype=torch.float64)
    u[:, -1] = 0.3
    composed = compose_affine(u, a)
    # with a constant u, A(x + u) - x = (A x - x) + A_lin u
    expected = affine_displacement(a, shape) + (a[0, :dims, :dims] @ u[0].flatten(1)).view(
        1, dims, *shape
    )
    assert torch.allclose(composed, expected, atol=1e-10)


def test_resize_displacement_rescales_vectors():
    disp = torch.ones(1, 2, 9, 17)
    out = resize_displacement(disp, (17, 33))
    assert out.shape == (1, 2, 17, 33)
    assert torch.allclose(out[:, 0], torch.full_like(out[:, 0], 2.0))
    assert torch.allclose(out[:, 1], torch.full_like(out[:, 1], 2.0))


@pytest.mark.parametrize("shape", [(9, 11), (7, 9, 8)])
def test_sample_at_matches_warp_and_interpolates_between_voxels(shape):
    """sample_at(image, x + u(x)) at every voxel equals warp(image, u); halfway between two voxels
    it gives their mean; gradients reach the points."""
    from deepsim.warp import identity_grid, sample_at

    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 2, *shape, generator=gen)
    u = torch.randn(1, len(shape), *shape, generator=gen)
    points = (identity_grid(shape) + u).flatten(2)[0].T
    dense = warp(image, u).flatten(2)[0].T
    assert torch.allclose(sample_at(image, points), dense, atol=1e-5)
    mid = torch.zeros(1, len(shape))
    mid[0, -1] = 0.5
    expected = image[(0, slice(None)) + (0,) * (len(shape) - 1)][:, :2].mean(-1)
    assert torch.allclose(sample_at(image, mid)[0], expected, atol=1e-6)
    pts = points.clone().requires_grad_()
    sample_at(image, pts).sum().backward()
    assert pts.grad is not None and float(pts.grad.abs().sum()) > 0
