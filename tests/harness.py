"""Round-trip checks for Keras layers and models (in the spirit of keras-hub's layer tests).

`assert_config_round_trip(layer, args)`: the layer's serialized config is plain JSON; the
layer rebuilt from it (through `tf.keras.layers.deserialize`, i.e. by registered class name)
is of the same class, has the same config, the same weights (names, shapes, order), the same
output shapes, and, once given the original's weights, the same outputs.

`assert_saving_round_trip(model, inputs, tmp_path)`: a model saved as a SavedModel and as a
`.keras` file reloads into the same layer classes (not anonymous revived layers) and gives
the same outputs. The package's own layers must need no custom_objects.

Outputs are always compared with `training=False`, so dropout layers are deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

SAVE_FORMATS = ("tf", "keras")


def _plain(config: dict) -> dict:
    """The serialized config as a .keras file stores it; fails on anything JSON cannot hold."""
    return json.loads(json.dumps(config))


def _arrays(outputs) -> list[np.ndarray]:
    return [np.asarray(t) for t in tf.nest.flatten(outputs)]


def _call(layer, args, kwargs):
    return layer(*args, **{"training": False, **(kwargs or {})})


def _weight_layout(layer) -> list[tuple[str, tuple]]:
    # Last name component only: a layer deserialized with its build config is built outside
    # its name scope, so its own weights lose the "layer_name/" prefix (Keras does that too).
    return [(w.name.split("/")[-1], tuple(w.shape)) for w in layer.weights]


def assert_outputs_close(expected, actual, atol: float = 1e-6, what: str = "outputs") -> None:
    tf.nest.assert_same_structure(expected, actual, check_types=False)  # a reload may give lists
    for i, (want, got) in enumerate(zip(_arrays(expected), _arrays(actual))):
        assert want.shape == got.shape, f"{what}[{i}]: shape {got.shape} != {want.shape}"
        np.testing.assert_allclose(got, want, atol=atol, err_msg=f"{what}[{i}]")


def assert_config_round_trip(layer: tf.keras.layers.Layer, args: tuple, kwargs: dict | None = None,
                             atol: float = 1e-6, custom_objects: dict | None = None
                             ) -> tf.keras.layers.Layer:
    """Checks get_config -> from_config on `layer` (built or not) called as `layer(*args, **kwargs)`.

    `custom_objects` only for classes the package does not register. Returns the rebuilt
    layer (with the original's weights) for further checks."""
    expected = _call(layer, args, kwargs)  # builds the original if it was not built yet
    # serialize() wraps get_config() as a .keras file stores it (class, config, build config).
    config = _plain(tf.keras.layers.serialize(layer))
    clone = tf.keras.layers.deserialize(config, custom_objects=custom_objects)
    assert type(clone) is type(layer), f"rebuilt as {type(clone).__name__}"
    assert _plain(tf.keras.layers.serialize(clone)) == config, "config changed through from_config"

    fresh = _call(clone, args, kwargs)
    assert [a.shape for a in _arrays(fresh)] == [a.shape for a in _arrays(expected)], \
        "output shapes changed through from_config"
    assert _weight_layout(clone) == _weight_layout(layer), "weights changed through from_config"
    clone.set_weights(layer.get_weights())
    assert_outputs_close(expected, _call(clone, args, kwargs), atol, "rebuilt outputs")
    return clone


def _custom_layer_classes(model: tf.keras.Model) -> dict[str, type]:
    """name -> class of every layer (nested models included) defined outside Keras itself."""
    found = {}
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.Layer) and \
                not type(layer).__module__.startswith(("tf_keras", "keras")):
            found[layer.name] = type(layer)
    return found


def save_and_reload(model: tf.keras.Model, tmp_path: Path, save_format: str,
                    custom_objects: dict | None = None) -> tf.keras.Model:
    tmp_path.mkdir(parents=True, exist_ok=True)
    if save_format == "tf":
        path = tmp_path / "saved_model"
        model.save(str(path), save_format="tf")
    elif save_format in ("keras", "h5"):
        path = tmp_path / f"model.{save_format}"
        model.save(str(path))
    else:
        raise ValueError(f"unknown save format {save_format!r}")
    # The package's layers are registered: custom_objects only for other libraries' layers.
    return tf.keras.models.load_model(str(path), custom_objects=custom_objects)


def assert_saving_round_trip(model: tf.keras.Model, inputs, tmp_path: Path, formats=SAVE_FORMATS,
                             atol: float = 1e-6, custom_objects: dict | None = None) -> None:
    """Saves `model` in each format, reloads it, and compares layer classes and outputs."""
    expected = model(inputs, training=False)
    classes = _custom_layer_classes(model)
    for save_format in formats:
        reloaded = save_and_reload(model, Path(tmp_path) / save_format, save_format, custom_objects)
        # A SavedModel whose layers fail from_config still loads, as anonymous revived
        # layers: insist on the real classes.
        assert _custom_layer_classes(reloaded) == classes, f"{save_format}: layer classes changed"
        assert_outputs_close(expected, reloaded(inputs, training=False), atol,
                             f"{save_format} reloaded outputs")


def wrap_layer(layer: tf.keras.layers.Layer, inputs: dict, call=None) -> tf.keras.Model:
    """A functional model around `layer`: dict `inputs` (name -> example tensor) become
    tf.keras.Input's; `call(layer, keras_inputs)` applies the layer (default layer(inputs))."""
    keras_inputs = {name: tf.keras.Input(value.shape[1:], dtype=value.dtype, name=name)
                    for name, value in inputs.items()}
    outputs = (call or (lambda lyr, x: lyr(x)))(layer, keras_inputs)
    return tf.keras.Model(keras_inputs, outputs)
