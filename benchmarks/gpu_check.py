"""GPU check, for a session that is lent a CUDA machine: do CUDA and CPU agree, and how fast is it?

Checks (each prints PASS/FAIL with the measured difference):
  * warp, local NCC, DeepSim loss and its gradient: CUDA vs CPU in float32;
  * the shipped models' network forward passes: CUDA (with autocast) vs CPU;
  * the whole registration of a 3D pair: displacement fields agree within 0.1 mm (95th pct.);
then times forward and end-to-end registration on CUDA vs CPU (a table with ratios).

usage: python benchmarks/gpu_check.py [--sizes 96x112x96,160x192x224] [--repeats 3]
Exit code 1 when a check fails or no GPU is present.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from deepsim.api import RegistrationOptions
from deepsim.geometry import Grid, Image
from deepsim.modelio import load_model, resolve_model
from deepsim.register import register
from deepsim.similarity import DeepSimLoss, local_ncc_map
from deepsim.warp import warp


def _phantom(shape, shift=0.0):
    axes = [np.linspace(-1, 1, n) for n in shape]
    g = np.meshgrid(*axes, indexing="ij")
    r = sum((x - (shift if i == 0 else 0.0)) ** 2 / (0.3 + 0.1 * i) for i, x in enumerate(g))
    img = np.exp(-r) + 0.3 * np.exp(-4 * r) * np.cos(6 * g[-1])
    return img.astype(np.float32) * 100


def _check(name, diff, tol, failures):
    ok = diff <= tol
    print(f"{'PASS' if ok else 'FAIL'}  {name:<48} max diff {diff:.2e} (tolerance {tol:.0e})")
    if not ok:
        failures.append(name)


def _time(fn, repeats, sync):
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="96x112x96,160x192x224")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return 1
    cuda = torch.device("cuda")
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    failures: list[str] = []
    torch.manual_seed(0)

    model3 = load_model(resolve_model(None, 3))
    img = torch.rand(1, 1, 48, 56, 48)
    disp = torch.randn(1, 3, 48, 56, 48) * 2
    _check(
        "warp",
        (warp(img, disp) - warp(img.to(cuda), disp.to(cuda)).cpu()).abs().max().item(),
        1e-4,
        failures,
    )
    _check(
        "local NCC map",
        (local_ncc_map(img, img.flip(2)) - local_ncc_map(img.to(cuda), img.flip(2).to(cuda)).cpu())
        .abs()
        .max()
        .item(),
        1e-3,
        failures,
    )
    ext_cpu = model3.extractor
    loss_cpu = DeepSimLoss(ext_cpu)
    a = img.clone().requires_grad_(True)
    lc = loss_cpu(a, img.flip(2))
    lc.backward()
    ext_gpu = load_model(model3.path, cuda).extractor
    b = img.to(cuda).requires_grad_(True)
    with torch.autocast("cuda"):
        lg = DeepSimLoss(ext_gpu)(b, img.flip(2).to(cuda))
    lg.backward()
    _check("DeepSim loss (autocast, cosine in float32)", abs(lc.item() - lg.item()), 5e-3, failures)
    rel = ((a.grad - b.grad.cpu()).norm() / a.grad.norm()).item()
    _check("DeepSim gradient (relative)", rel, 5e-2, failures)

    for dims in (2, 3):
        m_cpu = load_model(resolve_model(None, dims))
        m_gpu = load_model(m_cpu.path, cuda)
        shape = (128, 128) if dims == 2 else (64, 64, 64)
        x, y = torch.rand(1, 1, *shape), torch.rand(1, 1, *shape)
        with torch.inference_mode():
            u_cpu = m_cpu.registration(x, y)
            with torch.autocast("cuda"):
                u_gpu = m_gpu.registration(x.to(cuda), y.to(cuda)).float().cpu()
        _check(
            f"{m_cpu.name} forward (voxels, autocast)",
            (u_cpu - u_gpu).abs().max().item(),
            5e-2,
            failures,
        )

    rows = []
    for size in args.sizes.split(","):
        shape = tuple(int(v) for v in size.split("x"))
        grid = Grid(shape, np.eye(4))
        fixed, moving = Image(_phantom(shape), grid), Image(_phantom(shape, 0.1), grid)
        res = {}
        for dev in ("cpu", "cuda"):
            opts = RegistrationOptions(device=dev)
            holder = {}

            def run(opts=opts, holder=holder, fixed=fixed, moving=moving):
                holder["r"] = register(fixed, moving, model3, opts)

            sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
            res[dev] = (_time(run, args.repeats, sync), holder["r"])
        d = np.linalg.norm(res["cpu"][1].displacement - res["cuda"][1].displacement, axis=-1)
        _check(
            f"registration {size}: displacement (95th pct, mm)",
            float(np.percentile(d, 95)),
            0.1,
            failures,
        )
        fwd = {}
        for dev in ("cpu", "cuda"):
            net = load_model(model3.path, dev).registration
            mshape = tuple(res["cpu"][1].model_grid.shape)
            x = torch.rand(1, 1, *mshape, device=dev)
            sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

            def fw(net=net, x=x, dev=dev):
                with torch.inference_mode(), torch.autocast(dev, enabled=dev == "cuda"):
                    net(x, x)

            fwd[dev] = _time(fw, args.repeats, sync)
        rows.append((size, fwd["cpu"], fwd["cuda"], res["cpu"][0], res["cuda"][0]))
    print(
        "\n| size | forward CPU s | forward GPU s | ratio | end to end CPU s | end to end GPU s | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, fc, fg, ec, eg in rows:
        print(
            f"| {size} | {fc:.3f} | {fg:.4f} | {fc / fg:.1f}x | {ec:.2f} | {eg:.2f} | {ec / eg:.1f}x |"
        )
    print(f"\npeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GB")
    print("FAILED: " + ", ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
