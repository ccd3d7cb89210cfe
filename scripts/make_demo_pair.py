"""Write the demo pair: two real brain templates at their native 1 mm resolution and orientation.

fixed  = FreeSurfer fsaverage ``brain.mgz`` (skull-stripped, stored LIA), cropped to the brain;
moving = MNI ICBM152 2009a T1 (skull-stripped, stored RAS), held out of all training.
Both get tissue labels (1 GM, 2 WM, 3 CSF; see deepsim.training.anatomy.tissue_labels) so Dice can be
measured. The data come from the packages the set-up installs; nothing is downloaded.

usage: python scripts/make_demo_pair.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from deepsim.training.anatomy import _files, read_mgh, tissue_labels


def _crop_to_labels(image: sitk.Image, labels: sitk.Image, margin: int = 6):
    arr = sitk.GetArrayFromImage(labels) > 0
    lo = [
        int(np.nonzero(arr.any(axis=tuple(a for a in range(3) if a != ax)))[0][0])
        for ax in range(3)
    ]
    hi = [
        int(np.nonzero(arr.any(axis=tuple(a for a in range(3) if a != ax)))[0][-1])
        for ax in range(3)
    ]
    lo = [max(0, v - margin) for v in lo]
    hi = [min(n - 1, v + margin) for v, n in zip(hi, arr.shape)]
    index = lo[::-1]
    size = [h - lo_ + 1 for lo_, h in zip(lo, hi)][::-1]
    return sitk.RegionOfInterest(image, size, index), sitk.RegionOfInterest(labels, size, index)


def main(out: str) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fs = _files("fsaverage")
    mni = _files("mni2009a")
    if fs is None or mni is None:
        raise SystemExit("the data packages are missing; run scripts/setup.sh first")
    brain = read_mgh(fs["image"].with_name("brain.mgz"))
    aseg = sitk.Cast(read_mgh(fs["labels"]), sitk.sitkInt16)
    tissue = tissue_labels("fsaverage", "tissue", sitk.GetArrayFromImage(aseg)).astype(np.uint8)
    fixed_labels = sitk.GetImageFromArray(tissue)
    fixed_labels.CopyInformation(aseg)
    fixed, fixed_labels = _crop_to_labels(sitk.Cast(brain, sitk.sitkFloat32), fixed_labels)

    t1 = sitk.ReadImage(str(mni["image"]), sitk.sitkFloat32)
    gm = sitk.GetArrayFromImage(sitk.ReadImage(str(mni["gm"]), sitk.sitkFloat32)) / 255.0
    wm = sitk.GetArrayFromImage(sitk.ReadImage(str(mni["wm"]), sitk.sitkFloat32)) / 255.0
    brain_mask = sitk.GetArrayFromImage(t1) / 255.0 > 0.2
    classes = np.argmax(np.stack([np.clip(1 - gm - wm, 0, 1), gm, wm]), axis=0) + 1
    mni_tissue = tissue_labels("mni2009a", "tissue", np.where(brain_mask, classes, 0))
    moving_labels = sitk.GetImageFromArray(mni_tissue.astype(np.uint8))
    moving_labels.CopyInformation(t1)
    moving, moving_labels = _crop_to_labels(t1, moving_labels)

    for name, img in (
        ("fixed", fixed),
        ("fixed_labels", fixed_labels),
        ("moving", moving),
        ("moving_labels", moving_labels),
    ):
        sitk.WriteImage(img, str(out / f"{name}.nii.gz"), useCompression=True)
    print(
        f"demo pair in {out}: fixed {fixed.GetSize()} (fsaverage), moving {moving.GetSize()} (MNI152 2009a)"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/demo-input")
