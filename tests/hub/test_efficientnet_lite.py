"""EfficientNet-Lite0 converted from the PyTorch wheel: parity with the original, and the hub interface."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from tfmmsearch.hub.efficientnet_lite import (
    FEATURE_DIM,
    LITE0_STAGES,
    MULTISCALE_LAYERS,
    block_specs,
    build_lite0_classifier,
    build_lite0_model,
    build_lite0_module,
    build_multiscale_features,
    lite0_weights_path,
    load_lite0_weights,
    weight_mapping,
)
from tfmmsearch.hub.torch_pickle import load_torch_state_dict

from .test_tiny_image import assert_fine_tunable, assert_round_trips, module_info, outputs_in_fresh_process

PARITY_TOLERANCE = 1e-4


def test_lite0_architecture_matches_the_state_dict_layout():
    specs = block_specs(LITE0_STAGES)
    assert len(specs) == 16  # _blocks.0 .. _blocks.15
    assert [s.index for s in specs if s.has_residual] == [2, 4, 6, 7, 9, 10, 12, 13, 14]
    assert specs[0].expand_ratio == 1 and specs[-1].filters_out == 320
    keys_per_kind = {"conv": 1, "depthwise": 1, "bn": 5}  # bn: 4 tensors + num_batches_tracked
    tensors = sum(keys_per_kind[kind] for _, _, kind in weight_mapping()) + 2  # + classifier
    assert tensors == 296


@pytest.fixture(scope="module")
def state_dict():
    return load_torch_state_dict(lite0_weights_path())


@pytest.mark.slow
def test_weight_loading_names_what_does_not_fit(state_dict):
    model, classifier = build_lite0_model(), build_lite0_classifier()
    missing = {k: v for k, v in state_dict.items() if k != "_blocks.7._bn1.running_var"}
    with pytest.raises(KeyError, match=r"_blocks\.7\._bn1\.running_var missing .*block7_depthwise_bn"):
        load_lite0_weights(model, classifier, missing, source="w.pth")
    extra = {**state_dict, "_blocks.16._project_conv.weight": np.zeros((1, 1, 1, 1), np.float32)}
    with pytest.raises(ValueError, match=r"no place in EfficientNet-Lite0: \['_blocks\.16"):
        load_lite0_weights(model, classifier, extra, source="w.pth")
    wrong = {**state_dict, "_conv_head.weight": np.zeros((1280, 321, 1, 1), np.float32)}
    with pytest.raises(ValueError, match="_conv_head has shapes .* layer head_conv needs"):
        load_lite0_weights(model, classifier, wrong, source="w.pth")


@pytest.fixture(scope="module")
def lite0_module(tmp_path_factory):
    return build_lite0_module(tmp_path_factory.mktemp("lite0") / "module")


@pytest.fixture(scope="module")
def lite0_inputs(reference_dir):
    return np.load(reference_dir / "lite0_inputs.npy")


@pytest.fixture(scope="module")
def lite0_reference(reference_dir):
    return dict(np.load(reference_dir / "lite0_reference.npz"))


@pytest.mark.slow
def test_module_matches_the_pytorch_original(lite0_module, lite0_inputs, lite0_reference):
    loaded = tf.saved_model.load(str(lite0_module))
    features = hub.KerasLayer(loaded)(lite0_inputs).numpy()
    logits = loaded.logits(lite0_inputs).numpy()
    signature_logits = loaded.signatures["logits"](images=tf.constant(lite0_inputs))["logits"].numpy()

    assert features.shape == (4, FEATURE_DIM) and logits.shape == (4, 1000)
    feature_error = np.abs(features - lite0_reference["features"]).max()
    logit_error = np.abs(logits - lite0_reference["logits"]).max()
    print(f"Lite0 parity: max |features - ref| = {feature_error:.2e}, max |logits - ref| = {logit_error:.2e}")
    assert feature_error < PARITY_TOLERANCE and logit_error < PARITY_TOLERANCE
    np.testing.assert_array_equal(signature_logits, logits)
    # The predicted ImageNet classes agree too (the flat-colour image included).
    np.testing.assert_array_equal(logits.argmax(1), lite0_reference["logits"].argmax(1))

    info = module_info(lite0_module)
    assert info["image_size"] == 224 and info["feature_dim"] == FEATURE_DIM and info["has_logits"] is True
    # The frozen head stays out of the fine-tunable variables.
    assert len(loaded.classifier_variables) == 2
    assert not {id(v) for v in loaded.classifier_variables} & {id(v) for v in loaded.variables}


@pytest.mark.slow
def test_module_gives_the_same_outputs_in_a_fresh_process(lite0_module, lite0_inputs, tmp_path):
    fresh = outputs_in_fresh_process(lite0_module, lite0_inputs, tmp_path, with_logits=True)
    loaded = tf.saved_model.load(str(lite0_module))
    np.testing.assert_allclose(fresh["features"], hub.KerasLayer(loaded)(lite0_inputs).numpy(), atol=1e-5)
    np.testing.assert_allclose(fresh["logits"], loaded.logits(lite0_inputs).numpy(), atol=1e-5)


@pytest.mark.slow
def test_module_fine_tunes_through_hub_keras_layer(lite0_module, lite0_inputs):
    assert_fine_tunable(lite0_module, lite0_inputs[:2])


@pytest.mark.slow
def test_module_round_trips_through_saved_model_save_and_load(lite0_module, lite0_inputs, tmp_path):
    assert_round_trips(lite0_module, lite0_inputs[:1], tmp_path)


def test_multiscale_features_are_the_head_features_then_pooled_stage_activations():
    model = build_lite0_model()  # random weights: the wiring is what is tested
    multiscale = build_multiscale_features(model)
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    features = multiscale(images).numpy()
    widths = [model.get_layer(name).output.shape[-1] for name in MULTISCALE_LAYERS]
    assert widths == [672, 1152] and features.shape == (2, FEATURE_DIM + sum(widths))
    np.testing.assert_allclose(features[:, :FEATURE_DIM], model(images).numpy(), atol=1e-5)
    stage = tf.keras.Model(model.input, model.get_layer(MULTISCALE_LAYERS[1]).output)
    np.testing.assert_allclose(features[:, -1152:], stage(images).numpy().mean(axis=(1, 2)),
                               atol=1e-5)


@pytest.mark.slow
def test_multiscale_module_extends_the_pretrained_features(lite0_module, lite0_inputs, tmp_path):
    multiscale = build_lite0_module(tmp_path / "multiscale", multiscale=True)
    features = hub.KerasLayer(str(multiscale))(lite0_inputs).numpy()
    plain = hub.KerasLayer(str(lite0_module))(lite0_inputs).numpy()
    assert features.shape == (4, 3104)
    np.testing.assert_allclose(features[:, :FEATURE_DIM], plain, atol=1e-5)
    assert (features[:, FEATURE_DIM:] >= 0).all() and features[:, FEATURE_DIM:].max() <= 6.0  # ReLU6
    info = module_info(multiscale)
    assert info["feature_dim"] == 3104 and info["has_logits"] is False
