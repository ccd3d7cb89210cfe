"""Training: loss goes down, checkpoints resume, DDP keeps replicas identical."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from deepsim.modelio import load_model
from deepsim.training.train import dice_ce_loss, train

DATA = {"kind": "synthetic", "shape": [32, 32], "synth": {"n_labels": 4, "max_disp": 3.0}}


def _cfg(task, steps=30, **extra):
    cfg = {
        "name": f"tiny-{task}",
        "task": task,
        "spatial_dims": 2,
        "seed": 0,
        "network": {"channels": [4, 8], "n_classes": 4},
        "data": DATA,
        "optim": {
            "lr": 3e-3,
            "steps": steps,
            "batch_size": 4,
            "val_every": 10,
            "val_pairs": 4,
            "checkpoint_every": 10,
        },
        "preprocessing": {"spacing": 1.0, "multiple": 4},
    }
    cfg.update(extra)
    return cfg


def _log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_dice_ce_loss_rewards_the_rare_class():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 2:4, 2:4] = 1  # 4 of 64 pixels
    right = torch.nn.functional.one_hot(labels, 2).movedim(-1, 1).float() * 8 - 4
    background = torch.stack([torch.full((1, 8, 8), 4.0), torch.full((1, 8, 8), -4.0)], 1)
    assert float(dice_ce_loss(right, labels)) < 0.01
    # all background: cross-entropy alone is about 0.5, the Dice term adds about 1
    assert torch.nn.functional.cross_entropy(background, labels) < 0.6
    assert float(dice_ce_loss(background, labels)) > 1.0


def test_autoencoder_training_lowers_its_loss(tmp_path):
    train(_cfg("autoencoder", steps=40), tmp_path, device="cpu", progress=False)
    log = _log(tmp_path)
    assert log[-1]["val_loss"] < 0.7 * log[0]["val_loss"]
    assert load_model(tmp_path / "model.pt").extractor is not None


def test_normalised_autoencoder_reconstructs_the_normalised_image(tmp_path):
    """With ``input_window`` the autoencoder's target is its locally normalised input (not the
    raw image, which it no longer sees), and the setting survives the model file."""
    from deepsim.networks import local_normalise
    from deepsim.training.train import _Task

    cfg = _cfg("autoencoder", steps=2)
    cfg["network"] = {**cfg["network"], "input_window": 5}
    train(cfg, tmp_path, device="cpu", progress=False)
    net = load_model(tmp_path / "model.pt").extractor
    assert net.input_window == 5
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        loss = _Task(cfg, net, tmp_path, "cpu").loss(net, {"fixed": x[:1], "moving": x[1:]})
        expected = torch.nn.functional.mse_loss(net(x), local_normalise(x, 5))
        raw = torch.nn.functional.mse_loss(net(x), x)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5) and abs(loss - raw) > 1e-3


def test_segmenting_boundaries_learns_a_target_no_contrast_hides(tmp_path):
    # random shapes, a random intensity per label drawn independently for the two images: the
    # label ids cannot be read from an image, their boundary bands can
    synth = {**DATA["synth"], "shared_contrast": False, "label_smoothness": 8.0}
    data = {**DATA, "shape": [48, 48], "synth": synth}
    cfg = _cfg("segmentation", steps=60, data=data, loss={"target": "boundaries"})
    cfg["network"] = {"channels": [8, 16], "n_classes": 4, "stem_channels": 8}
    train(cfg, tmp_path, device="cpu", progress=False)
    log = _log(tmp_path)
    assert log[-1]["val_dice"] > max(0.45, log[0]["val_dice"] + 0.2)
    assert load_model(tmp_path / "model.pt").config["loss"]["target"] == "boundaries"


def test_registration_training_lowers_loss_and_keeps_config(tmp_path):
    cfg = _cfg("registration", steps=40, loss={"similarity": "mse", "lambda": 0.1})
    train(cfg, tmp_path, device="cpu", progress=False)
    log = _log(tmp_path)
    assert log[-1]["val_loss"] < log[0]["val_loss"]
    model = load_model(tmp_path / "model.pt")
    assert model.loss.similarity == "mse"
    assert "val_dice" in model.config["metrics"]


def test_field_supervision_pulls_the_network_to_the_known_displacement():
    from deepsim.networks import build_network
    from deepsim.training.datasets import make_source
    from deepsim.training.train import _Task

    torch.manual_seed(0)
    net = build_network({"kind": "registration", "spatial_dims": 2, "channels": [8, 16]})
    pair = make_source(DATA, "val", 0).pair(0)
    loss = {"similarity": "mse", "lambda": 0.0}
    plain = _Task(_cfg("registration", loss=loss), net, None, "cpu")
    task = _Task(_cfg("registration", loss={**loss, "field_weight": 2.0}), net, None, "cpu")
    with torch.no_grad():  # the term is field_weight x the mean squared endpoint error
        sq_epe = (net(pair["moving"], pair["fixed"]) - pair["disp"]).square().sum(1).mean()
        assert torch.isclose(task.loss(net, pair), plain.loss(net, pair) + 2.0 * sq_epe)

    def epe():
        with torch.no_grad():
            return float((net(pair["moving"], pair["fixed"]) - pair["disp"]).norm(dim=1).mean())

    before, opt = epe(), torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        task.loss(net, pair).backward()
        opt.step()
    assert epe() < 0.5 * before
    # a pair without a known displacement cannot supervise the field
    with pytest.raises(ValueError, match="field_weight"):
        task.loss(net, {k: v for k, v in pair.items() if k != "disp"})


@pytest.mark.parametrize("dims", [2, 3])
def test_flow_features_point_along_a_known_shift(dims):
    from deepsim.networks import build_network, flow_features

    shape = (12, 10, 8)[:dims]
    for axis in range(dims):
        coords = torch.arange(shape[axis], dtype=torch.float32).reshape(
            [-1 if i == axis else 1 for i in range(dims)]
        )
        moving = (0.05 * coords).expand(shape)[None, None]
        fixed = moving + 0.05 * 0.5  # moving seen 0.5 voxel further along ``axis``
        feats = flow_features(moving, fixed)
        assert feats.shape == (1, 1 + dims, *shape)
        assert torch.allclose(feats[:, 0], torch.tensor(0.025))
        expected = torch.zeros(dims)
        expected[axis] = 4 * 0.025 * 0.05  # 4 d g, pointing along the shift
        assert torch.allclose(feats[0, 1:].flatten(1).mean(1), expected, atol=1e-7)
    net = build_network(
        {"kind": "registration", "spatial_dims": dims, "channels": [4, 8], "flow_features": True}
    )
    assert net.backbone.encoder[0].block[1].in_channels == 3 + dims  # after the batch norm
    x = torch.rand(1, 1, *(8,) * dims)
    assert net(x, x).shape == (1, dims, *(8,) * dims)


@pytest.mark.parametrize("dims", [2, 3])
def test_local_flow_recovers_a_known_smooth_subvoxel_displacement(dims):
    from deepsim.networks import build_network, local_flow
    from deepsim.training.synth import random_appearance, random_deformation, random_label_map
    from deepsim.warp import warp

    g = torch.Generator().manual_seed(3)
    shape = (48, 40, 32)[:dims]
    labels = random_label_map(shape, 8, g, smoothness=8.0)
    moving = random_appearance(labels, g, blur_range=(1.0, 1.0), noise_range=(0.0, 0.0))
    disp = random_deformation(shape, 1.0, g, smoothness=24.0)
    fixed = warp(moving, disp)
    out = local_flow(moving, fixed)
    assert out.shape == (1, dims + 1, *shape)
    textured = out[:, dims] > 0.02
    assert textured.float().mean() > 0.5
    error = (out[:, :dims] - disp).norm(dim=1)[textured].mean()
    assert error < 0.35 * disp.norm(dim=1)[textured].mean()  # along the true displacement
    assert torch.equal(local_flow(moving, moving)[:, :dims], torch.zeros(1, dims, *shape))
    brighter = local_flow(moving, 0.8 * moving + 0.1)[:, :dims]  # contrast, not motion
    assert brighter.norm(dim=1)[textured].mean() < 0.2 * disp.norm(dim=1)[textured].mean()
    net = build_network(
        {"kind": "registration", "spatial_dims": dims, "channels": [4, 8], "shrink": 4}
        | {"flow_features": True, "local_flow": True}
    )
    assert net.backbone.encoder[0].block[1].in_channels == 3 + dims + 3 * (1 + dims)
    assert net(moving, fixed).shape == (1, dims, *shape)
    with pytest.raises(ValueError, match="power of 2"):
        build_network(
            {"kind": "registration", "spatial_dims": dims, "shrink": 3, "local_flow": True}
        )
    with pytest.raises(ValueError, match="stages"):  # its coarsest estimate needs 4 voxels
        build_network(
            {"kind": "registration", "spatial_dims": dims, "channels": [4], "local_flow": True}
        )


def test_coarse_registration_network_predicts_on_the_input_grid(tmp_path):
    from deepsim.networks import build_network

    net = build_network(
        {"kind": "registration", "spatial_dims": 2, "channels": [4, 8], "shrink": 2}
    )
    with torch.no_grad():  # a constant coarse field of (1, -0.5) coarse voxels
        net.head[-1].weight.zero_()
        net.head[-1].bias.copy_(torch.tensor([1.0, -0.5]))
    x = torch.rand(1, 1, 16, 24)
    disp = net(x, x)
    assert disp.shape == (1, 2, 16, 24)
    assert torch.allclose(disp[0, :, 3, 5], torch.tensor([2.0, -1.0]))  # input-grid voxels
    # any size: extended by edge values to the net's stride (2 x 2^2) and cropped back
    odd = net(x[..., :13], x[..., :13])
    assert odd.shape == (1, 2, 16, 13)
    assert torch.allclose(odd[0, :, 3, 5], torch.tensor([2.0, -1.0]))
    # trains like the full-resolution net, on a model grid that need not fit the net's stride
    cfg = _cfg("registration", steps=20, loss={"similarity": "mse", "lambda": 0.1})
    cfg["network"] = {"channels": [4, 8], "shrink": 2}
    train(cfg, tmp_path, device="cpu", progress=False)
    assert load_model(tmp_path / "model.pt").registration.shrink == 2


def test_resume_continues_where_it_stopped(tmp_path):
    cfg = _cfg("autoencoder", steps=20)
    train(cfg, tmp_path / "a", device="cpu", progress=False)
    once = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    # the same run interrupted at step 10, then resumed, ends in the same state
    train(
        {**cfg, "optim": {**cfg["optim"], "steps": 10}},
        tmp_path / "b",
        device="cpu",
        progress=False,
    )
    train(cfg, tmp_path / "b", device="cpu", progress=False)
    twice = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert twice["step"] == once["step"] == 20
    for k, v in once["network"].items():
        assert torch.allclose(v.float(), twice["network"][k].float(), atol=1e-6), k


def test_init_starts_from_the_weights_of_a_model_file(tmp_path):
    first = _cfg("autoencoder", steps=20)
    train(first, tmp_path / "a", device="cpu", progress=False)
    trained = load_model(tmp_path / "a" / "model.pt").extractor
    tuned = _cfg("autoencoder", steps=1, seed=5)
    tuned["optim"] = {**tuned["optim"], "lr": 1e-12, "init": str(tmp_path / "a" / "model.pt")}
    net = train(tuned, tmp_path / "b", device="cpu", progress=False).network
    for (name, p), q in zip(net.named_parameters(), trained.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
    untrained = {**tuned, "optim": {k: v for k, v in tuned["optim"].items() if k != "init"}}
    train(untrained, tmp_path / "c", device="cpu", progress=False)
    assert _log(tmp_path / "b")[0]["val_loss"] < 0.8 * _log(tmp_path / "c")[0]["val_loss"]
    other = {**tuned, "network": {"channels": [4, 16], "n_classes": 4}}
    with pytest.raises(ValueError, match="optim.init"):
        train(other, tmp_path / "d", device="cpu", progress=False)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    cfg = _cfg("autoencoder", steps=10)
    train(cfg, tmp_path, device="cpu", progress=False)
    other = {
        **cfg,
        "network": {**cfg["network"], "channels": [4, 4]},
        "optim": {**cfg["optim"], "steps": 20},
    }
    with pytest.raises(ValueError, match="belongs to another run"):
        train(other, tmp_path, device="cpu", progress=False)
    # a longer budget for the same run resumes
    outcome = train(
        {**cfg, "optim": {**cfg["optim"], "steps": 20}}, tmp_path, device="cpu", progress=False
    )
    assert outcome.step == 20


def test_bad_config_is_refused(tmp_path):
    from deepsim.training.train import load_config

    p = tmp_path / "c.json"
    p.write_text('{"task": "registration"}')
    with pytest.raises(ValueError, match="lacks the required entry"):
        load_config(p)
    p.write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(p)


def test_ddp_two_cpu_processes_keep_identical_weights(tmp_path):
    cfg = _cfg("autoencoder", steps=6)
    cfg["optim"]["val_every"] = 6
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import hashlib, json, os, torch
        from deepsim.training.train import dice_ce_loss, train
        cfg = json.load(open({str(tmp_path / "cfg.json")!r}))
        outcome = train(cfg, {str(tmp_path / "out")!r}, device="cpu", progress=False)
        rank = int(os.environ["RANK"])
        digest = hashlib.sha256()
        for p in outcome.network.parameters():
            digest.update(p.detach().numpy().tobytes())
        open({str(tmp_path / "out")!r} + f"/weights_rank{{rank}}.sha256", "w").write(digest.hexdigest())
        torch.distributed.destroy_process_group()
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        str(script),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hashes = sorted((tmp_path / "out").glob("weights_rank*.sha256"))
    assert len(hashes) == 2
    assert hashes[0].read_text() == hashes[1].read_text()


def test_training_from_a_folder_of_nifti_images(tmp_path):
    """The folder data set: images/ and labels/ of any geometry, resampled onto one model grid."""
    import numpy as np
    import SimpleITK as sitk

    from conftest import blob_image, oblique_grid
    from deepsim.geometry import Image, to_sitk

    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "labels").mkdir()
    for i in range(4):
        img = blob_image(oblique_grid((30, 34)), centre_shift=[i - 1.5, 1.0 - i])
        sitk.WriteImage(to_sitk(img), str(tmp_path / "data" / "images" / f"s{i}.nii.gz"))
        lab = Image((img.array > 150).astype(np.uint8), img.grid)
        sitk.WriteImage(to_sitk(lab), str(tmp_path / "data" / "labels" / f"s{i}.nii.gz"))
    cfg = _cfg("registration", steps=10, loss={"similarity": "ncc", "lambda": 0.5})
    cfg["data"] = {"kind": "folder", "root": str(tmp_path / "data"), "val_fraction": 0.25}
    cfg["optim"]["batch_size"] = 2
    outcome = train(cfg, tmp_path / "out", device="cpu", progress=False)
    assert outcome.step == 10
    log = _log(tmp_path / "out")
    assert 0 < log[-1]["val_dice_identity"] <= 1


def test_data_kinds_are_an_open_registry():
    """A new kind plugs in with register_source (no patching); each source carries its grid."""
    from deepsim.geometry import Grid
    from deepsim.training.datasets import make_source, register_source

    class Constant:
        def __init__(self, data, split):
            self.grid = Grid((8, 8), np.diag([2.0, 3.0, 1.0]))
            self.split = split

        def pair(self, index, device="cpu"):
            x = torch.full((1, 1, 8, 8), float(index))
            return {"fixed": x, "moving": x, "fixed_labels": x.long(), "moving_labels": x.long()}

        def sample(self, generator, device="cpu"):
            return self.pair(0, device)

    register_source("constant-test", lambda data, split, seed, pre: Constant(data, split))
    source = make_source({"kind": "constant-test"}, "val")
    assert source.split == "val" and source.grid.spacing.tolist() == [2.0, 3.0]
    synthetic = make_source({"kind": "synthetic", "shape": [16, 16]}, "train")
    assert synthetic.grid.shape == (16, 16) and synthetic.grid.spacing.tolist() == [1.0, 1.0]
    coarse = make_source({"kind": "synthetic", "shape": [16, 16], "spacing": [3.0, 2.0]})
    assert coarse.grid.spacing.tolist() == [3.0, 2.0]
    with pytest.raises(ValueError, match="data.spacing"):
        make_source({"kind": "synthetic", "shape": [16, 16], "spacing": [3.0]})
    with pytest.raises(ValueError, match="constant-test.*synthetic|data.kind must be one of"):
        make_source({"kind": "nope"})
