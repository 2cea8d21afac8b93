"""Saves an image feature-vector model as a TF-Hub-format SavedModel, atomically.

The saved interface follows the TF-Hub image feature vector convention: calling the module on
float32 [batch, height, width, 3] RGB in [0, 1] returns [batch, features]; pixel normalisation
happens inside. The root is a Reusable SavedModel (the interface `hub.KerasLayer` relies on):
`__call__(images, training=False)` traced for both values of `training` (batch norm behaves
differently), plus `variables`, `trainable_variables` and `regularization_losses`, which let
`hub.KerasLayer(..., trainable=True)` fine-tune it. The model is traced as a whole rather than
saved as a Keras model: Keras also traces and saves every one of Lite0's ~200 layers, which made
saving it about 2.5x and loading it about 3x slower (15 s and 5 s on 2 CPU cores).

An optional classifier head (Lite0's ImageNet logits) is saved beside the features as a `logits`
function and signature; its weights are kept out of `variables`, so fine-tuning the features
never sees (or warns about) a head it cannot reach.

A small JSON file beside saved_model.pb records the expected image size and feature width, so an
image tower can resize its inputs without running the module.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import tensorflow as tf
import tf_keras

INFO_FILE = "image_module.json"
IMAGES_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")


class ImageStandardization(tf_keras.layers.Layer):
    """(x - mean) / std per RGB channel: the module's own pixel normalisation, saved with it."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 channels with std > 0, got mean={mean}, std={std}")
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]

    def call(self, images):
        return (images - tf.constant(self.mean, images.dtype)) / tf.constant(self.std, images.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def _check_model(features_model: tf_keras.Model) -> int:
    shape = features_model.output_shape
    if not (isinstance(shape, tuple) and len(shape) == 2 and shape[1]):
        raise ValueError(f"an image feature model must output [batch, features], got {shape}")
    return int(shape[1])


def _traced_loss(model: tf_keras.Model, index: int):
    """A zero-argument tf.function for model.losses[index] (a def, so no loop variable is captured)."""
    fn = tf.function(lambda: model.losses[index], input_signature=[])
    fn.get_concrete_function()
    return fn


def _reusable_module(features_model: tf_keras.Model,
                     classifier: tf_keras.layers.Layer | None) -> tuple[tf.train.Checkpoint, dict]:
    """The root object of the SavedModel and its serving signatures."""

    @tf.function
    def call(images, training=False):
        return features_model(images, training=training)

    for training in (False, True):  # hub.KerasLayer passes a Python bool
        call.get_concrete_function(IMAGES_SPEC, training=training)

    # The signatures call the traced `call` rather than the model: one trace of the model each.
    @tf.function(input_signature=[IMAGES_SPEC])
    def features(images):
        return {"features": call(images, training=False)}

    root = tf.train.Checkpoint()
    root.__call__ = call
    root.variables = list(features_model.variables)
    root.trainable_variables = list(features_model.trainable_variables)
    root.regularization_losses = [_traced_loss(features_model, i) for i in range(len(features_model.losses))]
    signatures = {"serving_default": features}
    if classifier is not None:
        @tf.function(input_signature=[IMAGES_SPEC])
        def logits(images):
            return classifier(call(images, training=False))

        @tf.function(input_signature=[IMAGES_SPEC])
        def logits_signature(images):
            return {"logits": logits(images)}

        root.classifier_variables = list(classifier.variables)
        root.logits = logits
        signatures["logits"] = logits_signature
    return root, signatures


def save_image_module(out_dir: str | Path, features_model: tf_keras.Model, *, image_size: int,
                      classifier: tf_keras.layers.Layer | None = None,
                      info: dict[str, Any] | None = None) -> Path:
    """Writes `features_model` (and an optional `logits` head) as a hub module at `out_dir`.

    The module is built in a temporary directory beside `out_dir` and renamed into place, so a
    crash never leaves a half-written module that looks complete; an existing `out_dir` is
    replaced. Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    feature_dim = _check_model(features_model)
    if classifier is not None and not classifier.built:
        classifier.build((None, feature_dim))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        root, signatures = _reusable_module(features_model, classifier)
        tf.saved_model.save(root, str(tmp_dir), signatures=signatures)
        module_info = {
            "format": "tf-hub image feature vector",
            "input": "float32 [batch, height, width, 3] RGB in [0, 1]",
            "image_size": int(image_size),
            "feature_dim": feature_dim,
            "has_logits": classifier is not None,
            **(info or {}),
        }
        (tmp_dir / INFO_FILE).write_text(json.dumps(module_info, indent=2) + "\n")
        _replace_dir(tmp_dir, out_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def _replace_dir(new_dir: Path, out_dir: Path) -> None:
    """Renames new_dir to out_dir; an old out_dir is moved aside first and deleted after."""
    old_dir = None
    if out_dir.exists():
        old_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old_dir / "module")
    os.replace(new_dir, out_dir)
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
