import pytest
import torch

from deepsim.networks import NetworkConfig, build_network
from deepsim.similarity import (
    DeepSimLoss,
    VGGFeatures,
    cosine_maps,
    deepsim_map,
    local_ncc_map,
    ncc_loss,
)


def _extractor(dims):
    torch.manual_seed(0)
    net = build_network(NetworkConfig("segmentation", dims, [4, 8, 8], dropout=0.5, n_classes=3))
    return net


@pytest.mark.parametrize("dims", [2, 3])
def test_deepsim_of_image_with_itself_is_zero(dims):
    loss = DeepSimLoss(_extractor(dims))
    x = torch.rand(2, 1, *([16] * dims))
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    y = torch.rand(2, 1, *([16] * dims))
    assert float(loss(y, x)) > 0.01


def test_deepsim_gradient_flows_to_warped_only():
    ext = _extractor(2)
    loss = DeepSimLoss(ext)
    warped = torch.rand(1, 1, 16, 16, requires_grad=True)
    fixed = torch.rand(1, 1, 16, 16, requires_grad=True)
    loss(warped, fixed).backward()
    assert warped.grad is not None and warped.grad.abs().sum() > 0
    assert fixed.grad is None
    assert all(p.grad is None and not p.requires_grad for p in ext.parameters())


def test_deepsim_keeps_extractor_in_eval_mode():
    ext = _extractor(2)
    loss = DeepSimLoss(ext)
    loss.train()
    assert not ext.training
    x = torch.rand(1, 1, 16, 16)
    y = torch.rand(1, 1, 16, 16)
    # deterministic despite dropout=0.5: eval mode inside the loss
    assert float(loss(x, y)) == float(loss(x, y))


def test_cosine_maps_clamp_squared_norms():
    zeros = [torch.zeros(1, 3, 4, 4)]
    ones = [torch.ones(1, 3, 4, 4)]
    # ||0||^2 clamped to 1e-6 -> cosine 0, no NaN
    m = cosine_maps(zeros, ones)[0]
    assert torch.isfinite(m).all() and m.abs().max() == 0
    assert torch.allclose(cosine_maps(ones, ones)[0], torch.ones(1, 4, 4))
    assert torch.allclose(cosine_maps(ones, [-o for o in ones])[0], -torch.ones(1, 4, 4))


@pytest.mark.parametrize("kind", ["segmentation", "autoencoder"])
def test_stem_puts_feature_level_0_at_full_resolution(kind):
    torch.manual_seed(0)
    net = build_network(NetworkConfig(kind, 3, [4, 8], n_classes=3, stem_channels=5))
    x = torch.rand(1, 1, 8, 16, 8)
    feats = net.features(x)
    assert [f.shape for f in feats] == [(1, 5, 8, 16, 8), (1, 4, 4, 8, 4), (1, 8, 2, 4, 2)]
    assert [f.shape for f in net.features(x, 2)] == [f.shape for f in feats[:2]]
    assert net(x).shape[2:] == x.shape[2:]
    # the loss only looks at the requested levels, the first of them at full resolution
    loss = DeepSimLoss(net, levels=[0])
    shifted = torch.roll(x, 1, dims=3)
    assert float(loss(shifted, x)) > float(loss(x, x)) + 1e-4


def test_locally_normalised_extractor_ignores_offset_and_contrast():
    """With ``input_window``, the DeepSim features see the image normalised in a box: an offset
    leaves them unchanged, a doubled contrast nearly so (only the spread floor differs), while
    without it both change the features; a 1-voxel shift still does."""
    torch.manual_seed(0)
    x = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 16, 16, 16), 3, 1, 1)
    x = (x - x.min()) / (x.max() - x.min())

    def loss(net, a):
        return float(DeepSimLoss(net)(a, x))

    for window, invariant in ((5, True), (0, False)):
        torch.manual_seed(1)
        net = build_network(
            NetworkConfig("autoencoder", 3, [4, 8], stem_channels=4, input_window=window)
        )
        offset, contrast = loss(net, x + 0.3), loss(net, 0.5 + 2 * (x - 0.5))
        shift = loss(net, torch.roll(x, 1, dims=3))
        if invariant:
            assert offset < 1e-5 and contrast < 0.2 * shift, (offset, contrast, shift)
        else:
            assert offset > 1e-3 and contrast > 1e-3, (offset, contrast)


@pytest.mark.parametrize("dims", [2, 3])
def test_maps_have_the_image_shape(dims):
    shape = (2, 1) + (16,) * dims
    a, b = torch.rand(shape), torch.rand(shape)
    assert local_ncc_map(a, b).shape == shape
    assert deepsim_map(_extractor(dims), a, b).shape == shape


def test_ncc_of_linearly_related_images_is_one():
    a = torch.rand(1, 1, 24, 24)
    m = local_ncc_map(a, 3 * a)
    assert torch.allclose(m, torch.ones_like(m), atol=1e-4)
    assert float(ncc_loss(a, 3 * a)) == pytest.approx(0.0, abs=1e-4)
    # an offset breaks linearity only where the zero padding enters the window
    inner = local_ncc_map(a, 3 * a + 2)[..., 4:-4, 4:-4]
    assert torch.allclose(inner, torch.ones_like(inner), atol=1e-4)
    assert float(ncc_loss(a, torch.rand(1, 1, 24, 24))) > 0.5


def test_ncc_flat_regions_give_zero_not_nan():
    m = local_ncc_map(torch.zeros(1, 1, 12, 12), torch.rand(1, 1, 12, 12))
    assert torch.isfinite(m).all() and m.max() == 0


def test_vgg_without_local_weights_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not downloaded"):
        VGGFeatures(tmp_path / "vgg16.pth")


def test_vgg_loads_torchvision_layout(tmp_path):
    # a state dict laid out like torchvision's vgg16 (random values): it must load strictly
    state = {}
    chans = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    for idx, (i, o) in zip([0, 2, 5, 7, 10, 12, 14], chans):
        state[f"features.{idx}.weight"] = torch.randn(o, i, 3, 3) * 0.01
        state[f"features.{idx}.bias"] = torch.zeros(o)
    state["classifier.0.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "vgg16.pth")
    vgg = VGGFeatures(tmp_path / "vgg16.pth")
    feats = vgg.features(torch.rand(1, 1, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256]
    assert [f.shape[-1] for f in feats] == [32, 16, 8]
