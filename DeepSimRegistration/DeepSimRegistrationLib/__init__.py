"""Slicer glue of DeepSim Registration (Qt-free): MRML nodes <-> deepsim images and transforms.

Nothing here imports torch at import time; the registration itself loads it on use.
"""

from .nodes import (  # noqa: F401
    DIVERGING_BLUE_RED_ID,
    INFERNO_ID,
    affine_to_linear_transform,
    ensure_color_table,
    make_transform_chain,
    model_field_to_grid_transform,
    remove_node,
    resample_through_chain,
    set_scalar_volume,
    set_slice_layers,
    show_heatmap_display,
    show_jacobian_display,
    show_transform_grid,
    transform_chain_bottom,
    volume_to_image,
)
from .registration import (  # noqa: F401
    DEVICES,
    HEATMAP_NAMES,
    QUALITY_PRESETS,
    RegistrationOutputs,
    gpuLikelyAvailable,
    listModels,
    registerVolumes,
    showHeatmap,
)
from .sampledata import sampleDataSources  # noqa: F401
