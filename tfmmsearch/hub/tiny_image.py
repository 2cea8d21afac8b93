"""A tiny EfficientNet-style image module: the image tower's stand-in for tests and the demo.

Same interface as the converted Lite0 module ([B, H, W, 3] RGB in [0, 1] -> [B, feature_dim],
fine-tunable through hub.KerasLayer), same block family (MBConv, ReLU6, batch norm), but a few
thousand weights, so it builds and saves in seconds. The weights are random yet deterministic:
they are drawn from numpy's generator seeded with `seed`, not from TensorFlow's initialisers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tf_keras

from tfmmsearch.hub.efficientnet_lite import Stage, build_efficientnet_lite
from tfmmsearch.hub.image_module import save_image_module

TINY_STEM_FILTERS = 16
TINY_STAGES = (
    Stage(1, 3, 1, 1, 16, 16),
    Stage(2, 3, 2, 4, 16, 24),
    Stage(1, 5, 2, 4, 24, 32),
)
TINY_MEAN = (0.5, 0.5, 0.5)
TINY_STD = (0.25, 0.25, 0.25)


def _seeded_weights(model: tf_keras.Model, seed: int) -> list[np.ndarray]:
    """He-normal kernels and slightly varied batch-norm scales/offsets, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        shape = tuple(weight.shape)
        kind = weight.name.split("/")[-1].split(":")[0]
        if kind in ("kernel", "depthwise_kernel"):
            # HWIO for convs, HWC1 for depthwise: the fan-in is all but the output axis.
            fan_in = int(np.prod(shape[:-1])) if kind == "kernel" else int(np.prod(shape[:2]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif kind == "gamma":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif kind == "beta":
            value = 0.1 * rng.standard_normal(shape)
        elif kind == "moving_mean":
            value = np.zeros(shape)
        elif kind == "moving_variance":
            value = np.ones(shape)
        else:
            raise ValueError(f"tiny image model: no initialiser for weight {weight.name}")
        values.append(value.astype(np.float32))
    return values


def build_tiny_image_model(feature_dim: int = 32, seed: int = 0) -> tf_keras.Model:
    """The tiny feature extractor, weights drawn from `seed`."""
    if feature_dim < 1:
        raise ValueError(f"feature_dim must be positive, got {feature_dim}")
    model = build_efficientnet_lite(TINY_STAGES, TINY_STEM_FILTERS, feature_dim, TINY_MEAN, TINY_STD,
                                    name="tiny_image")
    model.set_weights(_seeded_weights(model, seed))
    return model


def build_tiny_image_module(out_dir: str | Path, image_size: int = 64, feature_dim: int = 32,
                            seed: int = 0) -> Path:
    """Builds and saves the tiny module at `out_dir` (replacing it); returns `out_dir`.

    `image_size` is the size the module expects (recorded in its image_module.json); the module
    accepts other sizes too, as every layer is convolutional up to the global pooling.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    model = build_tiny_image_model(feature_dim, seed)
    return save_image_module(out_dir, model, image_size=image_size, info={
        "name": "tiny-image",
        "source": f"random weights, seed {seed} (a test fixture, not a pretrained model)",
        "normalisation": {"mean": list(TINY_MEAN), "std": list(TINY_STD)},
    })
