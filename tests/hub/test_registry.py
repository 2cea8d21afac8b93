"""Handle resolution: URLs pass through, built modules resolve, missing ones say how to build."""

import json

import pytest

from tfmmsearch.hub import registry
from tfmmsearch.hub.registry import HubModuleNotFound, build_bundle, resolve_handle


def test_urls_pass_through_untouched(tmp_path):
    url = "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3"
    assert resolve_handle(url, tmp_path) == url


def test_missing_local_module_names_the_build_command(tmp_path):
    with pytest.raises(HubModuleNotFound, match="tfmmsearch hub build minilm-l6"):
        resolve_handle("minilm-l6-encoder", tmp_path)
    with pytest.raises(HubModuleNotFound, match="neither a URL"):
        resolve_handle(str(tmp_path / "nowhere"), tmp_path)


def test_build_is_idempotent_and_atomic(tmp_path, monkeypatch):
    calls = []

    def fake_build(out_dir, options):
        calls.append(out_dir)
        (out_dir / "module").mkdir()
        (out_dir / "module" / "saved_model.pb").write_bytes(b"x")
        return {"tiny-image": out_dir / "module"}

    bundle = registry.BUNDLES["tiny-image"]
    monkeypatch.setitem(registry.BUNDLES, "tiny-image", registry.Bundle(
        bundle.name, bundle.components, bundle.description, fake_build))
    first = build_bundle("tiny-image", tmp_path)
    second = build_bundle("tiny-image", tmp_path)
    assert first == second and len(calls) == 1
    assert resolve_handle("tiny-image", tmp_path) == str(tmp_path / "tiny-image" / "module")
    assert json.loads((tmp_path / "tiny-image" / registry.MANIFEST).read_text()) == {"tiny-image": "module"}


def test_a_bundle_built_before_a_component_was_added_is_built_again(tmp_path, monkeypatch):
    def build_one(out_dir, options):
        (out_dir / "module").mkdir()
        return {"tiny-image": out_dir / "module"}

    def build_two(out_dir, options):
        for name in ("module", "extra"):
            (out_dir / name).mkdir()
        return {"tiny-image": out_dir / "module", "tiny-image-extra": out_dir / "extra"}

    bundle = registry.BUNDLES["tiny-image"]
    monkeypatch.setitem(registry.BUNDLES, "tiny-image", registry.Bundle(
        bundle.name, ("tiny-image",), bundle.description, build_one))
    build_bundle("tiny-image", tmp_path)
    monkeypatch.setitem(registry.BUNDLES, "tiny-image", registry.Bundle(
        bundle.name, ("tiny-image", "tiny-image-extra"), bundle.description, build_two))
    monkeypatch.setitem(registry._BUNDLE_OF, "tiny-image-extra", registry.BUNDLES["tiny-image"])
    with pytest.raises(HubModuleNotFound, match="tfmmsearch hub build tiny-image"):
        resolve_handle("tiny-image-extra", tmp_path)  # the old build lacks it
    assert set(build_bundle("tiny-image", tmp_path)) == {"tiny-image", "tiny-image-extra"}


def test_a_failed_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def broken_build(out_dir, options):
        (out_dir / "module").mkdir()
        raise RuntimeError("conversion failed")

    bundle = registry.BUNDLES["tiny-image"]
    monkeypatch.setitem(registry.BUNDLES, "tiny-image", registry.Bundle(
        bundle.name, bundle.components, bundle.description, broken_build))
    with pytest.raises(RuntimeError):
        build_bundle("tiny-image", tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(HubModuleNotFound):
        resolve_handle("tiny-image", tmp_path)


def test_built_tiny_modules_resolve(tiny_hub_cache):
    for handle in ("tiny-bert-preprocessor", "tiny-bert-encoder", "tiny-image"):
        assert resolve_handle(handle, tiny_hub_cache).startswith(str(tiny_hub_cache))
