"""Tests of deepsim.training.synth: synthetic pairs with exact labels and ground-truth displacements."""

from __future__ import annotations

import json

import pytest
import torch

from deepsim.training.synth import (
    SynthConfig,
    SyntheticPairs,
    augment_intensity,
    boundary_bands,
    gaussian_blur,
    microscopy_pair,
    random_appearance,
    random_deformation,
    random_label_map,
    random_nuclei,
    smooth_noise,
    synth_pair,
)
from deepsim.warp import warp

SHAPES = {2: (64, 80), 3: (32, 40, 36)}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# no intensity nuisance: images differ only by the deformation
CLEAN = dict(
    std_range=(0.0, 0.0),
    blur_range=(0.0, 0.0),
    bias_strength=0.0,
    gamma_std=0.0,
    noise_range=(0.0, 0.0),
    contrast_range=(1.0, 1.0),
)


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def mean_dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean Dice over the labels present in either map."""
    scores = []
    for label in torch.unique(torch.cat([a.flatten(), b.flatten()])):
        x, y = a == label, b == label
        scores.append(float(2 * (x & y).sum() / (x.sum() + y.sum())))
    return sum(scores) / len(scores)


def warp_labels(labels: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    return warp(labels.float(), disp, mode="nearest").round().long()


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean())


def jacobian_det(disp: torch.Tensor) -> torch.Tensor:
    """det(I + grad u) by central differences, (*spatial)."""
    dims = disp.shape[1]
    grads = torch.gradient(disp[0], dim=tuple(range(1, dims + 1)))  # d u_i / d x_j
    jac = torch.stack([torch.stack([grads[j][i] for j in range(dims)], 0) for i in range(dims)], 0)
    jac = jac + torch.eye(dims).view(dims, dims, *([1] * dims))
    return torch.linalg.det(jac.movedim(0, -1).movedim(0, -1))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("device", DEVICES)
def test_random_label_map(dims: int, device: str) -> None:
    shape = SHAPES[dims]
    labels = random_label_map(shape, 8, gen(0, device), smoothness=8.0)
    assert labels.shape == (1, 1, *shape) and labels.dtype == torch.int64
    assert labels.device.type == device
    assert 0 <= int(labels.min()) and int(labels.max()) < 8
    assert torch.unique(labels).numel() >= 5
    assert torch.equal(labels, random_label_map(shape, 8, gen(0, device), smoothness=8.0))
    assert not torch.equal(labels, random_label_map(shape, 8, gen(1, device), smoothness=8.0))


@pytest.mark.parametrize("dims", [2, 3])
def test_random_deformation_peak_and_invertibility(dims: int) -> None:
    shape = SHAPES[dims]
    disp = random_deformation(shape, 4.0, gen(3), smoothness=12.0)
    assert disp.shape == (1, dims, *shape) and disp.dtype == torch.float32
    peak = float(disp.norm(dim=1).amax())
    assert 2.0 < peak < 5.0  # about max_disp
    assert float(jacobian_det(disp).amin()) > 0.0  # diffeomorphic: no folding
    assert torch.equal(disp, random_deformation(shape, 4.0, gen(3), smoothness=12.0))
    assert float(random_deformation(shape, 0.0, gen(3)).abs().amax()) == 0.0


def test_smooth_noise_is_stationary() -> None:
    fields = torch.cat([smooth_noise((48, 48), 1, 12.0, gen(i)) for i in range(60)])
    std = fields.std(dim=0)[0]
    border = torch.cat([std[0], std[-1], std[:, 0], std[:, -1]]).mean()
    centre = std[16:32, 16:32].mean()
    assert 0.8 < float(centre) < 1.2
    assert abs(float(border) - float(centre)) < 0.2


@pytest.mark.parametrize("dims", [2, 3])
def test_gaussian_blur_keeps_constants(dims: int) -> None:
    x = torch.full((1, 2, *SHAPES[dims]), 0.7)
    assert torch.allclose(gaussian_blur(x, 1.5), x, atol=1e-6)
    with pytest.raises(ValueError, match="gaussian_blur"):
        gaussian_blur(x, [1.0] * (dims + 1))


@pytest.mark.parametrize("dims", [2, 3])
def test_synth_pair_ground_truth_direction(dims: int) -> None:
    """warp(moving_labels, disp) equals fixed_labels; identity and the reverse are clearly worse."""
    shape = SHAPES[dims]
    cfg = SynthConfig(n_labels=10, label_smoothness=10.0, max_disp=4.0, disp_smoothness=12.0)
    for seed in range(2):
        pair = synth_pair(shape, gen(seed), cfg)
        assert set(pair) == {"fixed", "moving", "fixed_labels", "moving_labels", "disp"}
        warped = mean_dice(warp_labels(pair["moving_labels"], pair["disp"]), pair["fixed_labels"])
        identity = mean_dice(pair["moving_labels"], pair["fixed_labels"])
        reverse = mean_dice(warp_labels(pair["moving_labels"], -pair["disp"]), pair["fixed_labels"])
        assert warped > 0.95
        assert identity < warped - 0.05
        assert reverse < identity


@pytest.mark.parametrize("dims", [2, 3])
def test_synth_pair_images_follow_disp(dims: int) -> None:
    shape = SHAPES[dims]
    cfg = SynthConfig(n_labels=10, label_smoothness=10.0, max_disp=4.0, **CLEAN)
    pair = synth_pair(shape, gen(5), cfg)
    warped = mse(warp(pair["moving"], pair["disp"]), pair["fixed"])
    assert warped < 0.5 * mse(pair["moving"], pair["fixed"])
    assert warped < 0.5 * mse(warp(pair["moving"], -pair["disp"]), pair["fixed"])


@pytest.mark.parametrize("dims", [2, 3])
def test_synth_pair_ranges_and_types(dims: int) -> None:
    shape = SHAPES[dims]
    pair = synth_pair(shape, gen(7), SynthConfig(shared_contrast=False))
    for key in ("fixed", "moving"):
        assert pair[key].shape == (1, 1, *shape) and pair[key].dtype == torch.float32
        assert float(pair[key].min()) >= 0.0 and float(pair[key].max()) <= 1.0
        assert float(pair[key].std()) > 0.05
    for key in ("fixed_labels", "moving_labels"):
        assert pair[key].shape == (1, 1, *shape) and pair[key].dtype == torch.int64
    assert pair["disp"].shape == (1, dims, *shape)
    assert float(pair["disp"].abs().amax()) > 0.5


@pytest.mark.parametrize("dims", [2, 3])
def test_synth_pair_with_seed_labels_and_image(dims: int) -> None:
    """A real-like seed: labels and an image; the pair follows disp in labels and intensities."""
    shape = SHAPES[dims]
    seed_labels = random_label_map(shape, 6, gen(11), smoothness=10.0)[0, 0]
    seed_image = gaussian_blur((seed_labels.float() / 5.0)[None, None], 1.0)[0, 0]
    cfg = SynthConfig(max_disp=4.0, disp_smoothness=12.0, real_image_prob=1.0, **CLEAN)
    pair = synth_pair(shape, gen(12), cfg, seed_labels=seed_labels, seed_image=seed_image)
    assert mean_dice(warp_labels(pair["moving_labels"], pair["disp"]), pair["fixed_labels"]) > 0.95
    assert mean_dice(pair["moving_labels"], pair["fixed_labels"]) < 0.93
    # the seed is deformed too, so pairs from one seed differ from the seed itself
    assert not torch.equal(pair["moving_labels"][0, 0], seed_labels)
    warped = mse(warp(pair["moving"], pair["disp"]), pair["fixed"])
    assert warped < 0.3 * mse(pair["moving"], pair["fixed"])
    # random intensities from seed labels, with a black background
    cfg = SynthConfig(real_image_prob=0.0, zero_background_prob=1.0)
    pair = synth_pair(shape, gen(13), cfg, seed_labels=seed_labels, seed_image=seed_image)
    background = pair["moving_labels"] == 0
    assert float(pair["moving"][background].mean()) < float(pair["moving"][~background].mean())


def test_synth_pair_errors() -> None:
    labels = torch.zeros(64, 80, dtype=torch.long)
    with pytest.raises(ValueError, match="synth_pair.*seed_image needs seed_labels"):
        synth_pair((64, 80), gen(0), seed_image=labels.float())
    with pytest.raises(ValueError, match="synth_pair.*seed_labels"):
        synth_pair((64, 81), gen(0), seed_labels=labels)
    with pytest.raises(ValueError, match="synth_pair.*seed_labels"):
        synth_pair((64, 80), gen(0), seed_labels=labels.float())
    with pytest.raises(ValueError, match="shape"):
        synth_pair((64,), gen(0))


@pytest.mark.parametrize("dims", [2, 3])
def test_random_appearance_and_augment_ranges(dims: int) -> None:
    shape = SHAPES[dims]
    labels = random_label_map(shape, 5, gen(0), smoothness=8.0)
    image = random_appearance(labels, gen(1))
    assert image.shape == (1, 1, *shape) and 0.0 <= float(image.min()) <= float(image.max()) <= 1
    means = torch.linspace(0.0, 1.0, 5)
    clean = random_appearance(
        labels, gen(1), std_range=(0, 0), blur_range=(0, 0), bias_strength=0, gamma_std=0,
        noise_range=(0, 0), means=means, stds=torch.zeros(5),
    )  # fmt: skip
    expected = means[labels]
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(clean, expected, atol=1e-5)
    real = torch.zeros(1, 1, *shape)
    real[(..., *[slice(n // 4, 3 * n // 4) for n in shape])] = 500.0
    out = augment_intensity(real, gen(2))
    assert out.shape == real.shape and 0.0 <= float(out.min()) <= float(out.max()) <= 1.0
    assert float(out[real > 0].mean()) > float(out[real == 0].mean()) + 0.5
    assert torch.equal(out, augment_intensity(real, gen(2)))


def test_config_json_round_trip() -> None:
    cfg = SynthConfig(n_labels=7, mean_range=(0.1, 0.9), shared_contrast=False)
    restored = SynthConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        SynthConfig.from_dict({"n_label": 3})
    with pytest.raises(ValueError, match="std_range"):
        SynthConfig(std_range=(0.2, 0.1))
    with pytest.raises(ValueError, match="real_image_prob"):
        SynthConfig(real_image_prob=1.5)


@pytest.mark.parametrize("dims", [2, 3])
def test_synthetic_pairs_deterministic(dims: int) -> None:
    shape = SHAPES[dims]
    seeds = [random_label_map(shape, 4, gen(9), smoothness=8.0)[0, 0]]
    pairs = SyntheticPairs(shape, SynthConfig(seed_prob=0.5), seed=100, seeds=seeds)
    a, b, c = pairs.pair(3), pairs[3], pairs.pair(4)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["fixed"], c["fixed"])
    # pair(i) is sample() with a generator seeded seed + i
    d = pairs.sample(gen(103))
    assert all(torch.equal(a[k], d[k]) for k in a)
    # over a few pairs both sources are used: seed maps have 4 labels, random ones 16
    counts = {int(pairs.pair(i)["moving_labels"].max()) + 1 for i in range(8)}
    assert any(n <= 4 for n in counts) and any(n > 4 for n in counts)
    with pytest.raises(ValueError, match="SyntheticPairs"):
        SyntheticPairs(shape, seeds=[torch.zeros(5, 5, dtype=torch.long)])


@pytest.mark.parametrize("dims", [2, 3])
def test_microscopy_pairs_follow_disp_with_bright_nuclei(dims: int) -> None:
    """Microscopy pairs: nuclei masks follow the ground truth exactly, nuclei are brighter than
    the background, and the fixed frame is the moved specimen (closer after warping)."""
    shape = SHAPES[dims]
    pairs = SyntheticPairs(shape, SynthConfig(microscopy_prob=1.0, max_disp=3.0), seed=5)
    for i in range(2):
        p = pairs.pair(i)
        assert set(torch.unique(p["moving_labels"]).tolist()) == {0, 1}
        assert torch.equal(warp_labels(p["moving_labels"], p["disp"]), p["fixed_labels"])
        for image, labels in ((p["moving"], p["moving_labels"]), (p["fixed"], p["fixed_labels"])):
            assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
            assert float(image[labels == 1].mean()) > float(image[labels == 0].mean()) + 0.1
        assert mse(warp(p["moving"], p["disp"]), p["fixed"]) < mse(p["moving"], p["fixed"])


def test_microscopy_content_is_an_option_that_changes_nothing_when_off() -> None:
    shape = SHAPES[2]
    off = SyntheticPairs(shape, SynthConfig(), seed=3).pair(0)
    explicit = SyntheticPairs(shape, SynthConfig(microscopy_prob=0.0), seed=3).pair(0)
    assert all(torch.equal(off[k], explicit[k]) for k in off)
    assert len(torch.unique(off["moving_labels"])) > 2  # random label maps, not nuclei
    with pytest.raises(ValueError, match="microscopy_prob"):
        SynthConfig(microscopy_prob=1.5)
    with pytest.raises(ValueError, match="illumination_strength"):
        SynthConfig(illumination_strength=1.0)


def test_nuclei_density_and_shot_noise() -> None:
    """More and larger nuclei cover more of the field; fewer photons give noisier frames."""
    shape = (96, 96)
    sparse = random_nuclei(shape, gen(0), (5, 5), (2.0, 3.0))
    dense = random_nuclei(shape, gen(0), (80, 80), (5.0, 8.0))
    assert float((sparse > 0).float().mean()) < 0.1 < float((dense > 0).float().mean())
    assert int(dense.max()) > 20  # one id per visible nucleus

    def frame_noise(photons: float) -> float:
        cfg = SynthConfig(photon_range=(photons, photons), illumination_strength=0.0)
        cfg.bias_strength = 0.0
        cfg.noise_range = (0.0, 0.0)
        still = torch.zeros(1, 2, *shape)
        p = microscopy_pair(shape, gen(1), cfg, still)
        return mse(p["moving"], p["fixed"])

    assert frame_noise(10.0) > 3 * frame_noise(2000.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_boundary_bands_measure_distance_to_a_known_boundary(dims: int) -> None:
    shape = SHAPES[dims]
    labels = torch.zeros((1, 1, *shape), dtype=torch.long)
    labels[:, :, 20:] = 5  # one plane boundary between rows 19 and 20 of axis 0
    bands = boundary_bands(labels)[0, 0]
    profile = bands.flatten(1)[:, 0].tolist()  # along axis 0
    assert profile[19] == profile[20] == 1
    assert profile[18] == profile[21] == 2
    assert profile[16:18] == profile[22:24] == [3, 3]
    assert profile[15] == profile[24] == 0 and set(profile[:15] + profile[25:]) == {0}
    assert (bands == bands.flatten(1)[:, :1].view(-1, *[1] * (dims - 1))).all()  # planar


def test_boundary_bands_ignore_which_id_each_region_has() -> None:
    labels = random_label_map(SHAPES[3], 6, gen(3))
    relabelled = torch.tensor([4, 0, 5, 1, 3, 2])[labels]
    assert torch.equal(boundary_bands(labels), boundary_bands(relabelled))
    counts = torch.bincount(boundary_bands(labels).flatten(), minlength=4)
    assert (counts > 0).all()
    with pytest.raises(ValueError, match="int"):
        boundary_bands(labels.float())
