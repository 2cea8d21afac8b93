"""The tiny image module: the hub image interface, fine-tuning, fresh-process loading, atomic saves.

The helpers at the top check any saved image module; test_efficientnet_lite.py reuses them.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from tfmmsearch.hub import image_module
from tfmmsearch.hub.image_module import INFO_FILE, save_image_module
from tfmmsearch.hub.tiny_image import build_tiny_image_model, build_tiny_image_module

def module_info(module_dir):
    """The interface a module recorded when it was saved (its image_module.json)."""
    return json.loads((Path(module_dir) / INFO_FILE).read_text())


# --------------------------------------------------------------------------- shared checks

_FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow_hub as hub
    module_dir, images_path, out_dir, with_logits = sys.argv[1:5]
    images = np.load(images_path)
    np.save(os.path.join(out_dir, "features.npy"), hub.KerasLayer(module_dir)(images).numpy())
    if with_logits == "1":
        logits = hub.KerasLayer(module_dir, signature="logits", output_key="logits")
        np.save(os.path.join(out_dir, "logits.npy"), logits(images).numpy())
    # The module needs nothing from this project to run.
    assert not [m for m in sys.modules if m.startswith("tfmmsearch")], "module imported tfmmsearch"
""")


def outputs_in_fresh_process(module_dir, images, work_dir: Path, with_logits: bool = False) -> dict:
    """Loads the module through hub.KerasLayer in a new Python process and runs it on `images`.

    Returns {"features": ...} (and "logits", through the `logits` signature, if asked).
    """
    images_path = work_dir / "fresh_images.npy"
    np.save(images_path, images)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_SCRIPT, str(module_dir), str(images_path), str(work_dir),
         "1" if with_logits else "0"],
        cwd=work_dir, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    names = ("features", "logits") if with_logits else ("features",)
    return {name: np.load(work_dir / f"{name}.npy") for name in names}


def assert_fine_tunable(module_dir, images) -> None:
    """One SGD step through hub.KerasLayer(trainable=True) reaches and changes the module's weights."""
    loaded = tf.saved_model.load(str(module_dir))  # loaded once: Lite0 takes seconds to load
    frozen = hub.KerasLayer(loaded, trainable=False)
    frozen(images[:1])
    assert frozen.trainable_weights == [] and frozen.non_trainable_weights

    layer = hub.KerasLayer(loaded, trainable=True)
    head = tf_keras.layers.Dense(1, kernel_initializer=tf_keras.initializers.Constant(0.05))
    targets = tf.constant(np.arange(len(images), dtype=np.float32)[:, None])
    moving_before = [w.numpy().copy() for w in layer.non_trainable_weights]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((head(layer(images, training=True)) - targets) ** 2)
    weights = layer.trainable_weights
    assert weights and not {id(w) for w in weights} & {id(w) for w in layer.non_trainable_weights}
    grads = tape.gradient(loss, weights)
    assert all(g is not None for g in grads), [w.name for w, g in zip(weights, grads) if g is None]
    nonzero = [bool(np.any(g.numpy() != 0)) for g in grads]
    assert sum(nonzero) >= 0.9 * len(grads), f"only {sum(nonzero)}/{len(grads)} weights get gradient"
    stem = [i for i, w in enumerate(weights) if w.name.startswith("stem_conv/")]
    assert stem and nonzero[stem[0]], "the gradient does not reach the first convolution"

    before = [w.numpy().copy() for w in weights]
    tf_keras.optimizers.SGD(0.01).apply_gradients(zip(grads, weights))
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, weights)]
    # (A tiny gradient can vanish below float32 resolution, so not every weight must move.)
    assert sum(changed) >= 0.9 * len(weights) and changed[stem[0]]
    # training=True also ran batch norm in training mode, updating its moving statistics.
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(moving_before, layer.non_trainable_weights))


def assert_round_trips(module_dir, images, work_dir: Path, signature_key: str = "features") -> None:
    """tf.saved_model.load -> save -> load keeps outputs, signatures and the hub interface."""
    loaded = tf.saved_model.load(str(module_dir))
    expected = loaded(images).numpy()
    resaved = work_dir / "resaved"
    tf.saved_model.save(loaded, str(resaved), signatures=dict(loaded.signatures))
    again = tf.saved_model.load(str(resaved))
    np.testing.assert_array_equal(again(images).numpy(), expected)
    np.testing.assert_array_equal(again(images, training=False).numpy(), expected)
    served = again.signatures["serving_default"](images=tf.constant(images))[signature_key].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert len(again.trainable_variables) == len(loaded.trainable_variables) > 0
    assert len(again.variables) == len(loaded.variables)
    np.testing.assert_array_equal(hub.KerasLayer(again, trainable=True)(images).numpy(), expected)


# --------------------------------------------------------------------------- tiny module


@pytest.fixture(scope="module")
def tiny_module(tmp_path_factory) -> Path:
    return build_tiny_image_module(tmp_path_factory.mktemp("tiny") / "module", image_size=64,
                                   feature_dim=32, seed=0)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(1).random((3, 64, 64, 3), dtype=np.float32)


def test_module_maps_images_to_features_like_the_built_model(tiny_module, images):
    layer = hub.KerasLayer(str(tiny_module))
    features = layer(images).numpy()
    assert features.shape == (3, 32) and features.dtype == np.float32
    np.testing.assert_allclose(features, build_tiny_image_model(32, seed=0)(images).numpy(), atol=1e-6)
    assert np.ptp(features, axis=0).max() > 1e-3, "features do not depend on the image"
    # Fully convolutional up to the pooling: other sizes work too.
    assert layer(images[:, :48, :40]).shape == (3, 32)


def test_module_records_its_interface(tiny_module):
    info = module_info(tiny_module)
    assert info["image_size"] == 64 and info["feature_dim"] == 32 and info["has_logits"] is False
    assert info["name"] == "tiny-image"


def test_training_flag_switches_batch_norm_to_batch_statistics(tiny_module, images):
    loaded = tf.saved_model.load(str(tiny_module))
    inference = loaded(images, training=False).numpy()
    training = loaded(images, training=True).numpy()
    assert not np.allclose(inference, training)


def test_same_seed_gives_the_same_weights_and_another_seed_does_not():
    first, again, other = (build_tiny_image_model(16, seed) for seed in (3, 3, 4))
    assert first.output_shape == (None, 16)
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    kernels = [(a, b) for a, b, w in zip(first.get_weights(), other.get_weights(), first.weights)
               if "kernel" in w.name]
    assert kernels and all(not np.array_equal(a, b) for a, b in kernels)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="feature_dim"):
        build_tiny_image_model(0)
    with pytest.raises(ValueError, match="image_size"):
        build_tiny_image_module(tmp_path / "m", image_size=4)
    inputs = tf_keras.Input((8, 8, 3))
    not_a_feature_model = tf_keras.Model(inputs, tf_keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match=r"must output \[batch, features\]"):
        save_image_module(tmp_path / "m", not_a_feature_model, image_size=8)
    assert not (tmp_path / "m").exists()


def test_loads_in_a_fresh_process_with_the_same_outputs(tiny_module, images, tmp_path):
    in_process = hub.KerasLayer(str(tiny_module))(images).numpy()
    fresh = outputs_in_fresh_process(tiny_module, images, tmp_path)["features"]
    np.testing.assert_allclose(fresh, in_process, atol=1e-6)


def test_fine_tunes_through_hub_keras_layer(tiny_module, images):
    assert_fine_tunable(tiny_module, images)


def test_round_trips_through_saved_model_save_and_load(tiny_module, images, tmp_path):
    assert_round_trips(tiny_module, images, tmp_path)


def test_saving_is_atomic_and_replaces_an_existing_module(tmp_path, images, monkeypatch):
    out_dir = build_tiny_image_module(tmp_path / "module", seed=0)
    seed0 = hub.KerasLayer(str(out_dir))(images).numpy()

    def crash_midway(obj, export_dir, **kwargs):
        Path(export_dir, "saved_model.pb").write_bytes(b"half")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(image_module.tf.saved_model, "save", crash_midway)
        with pytest.raises(OSError, match="disk full"):
            build_tiny_image_module(out_dir, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["module"]  # no partial directories left
    np.testing.assert_array_equal(hub.KerasLayer(str(out_dir))(images).numpy(), seed0)

    build_tiny_image_module(out_dir, seed=1, feature_dim=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["module"]
    assert hub.KerasLayer(str(out_dir))(images).shape == (3, 8)
    assert json.loads((out_dir / "image_module.json").read_text())["feature_dim"] == 8
