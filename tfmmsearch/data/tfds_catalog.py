"""A TensorFlow Datasets builder over a local catalog, prepared fully offline.

Preparing a catalog once into TFRecord shards under a `data_dir` gives every later run (and
every tf.distribute worker) the standard TFDS reader: sharded files, split metadata, example
counts, and `builder.as_dataset(split)`, without re-validating thousands of image files.

Features of every example:

- `product_id`, `title`: Text.
- `image`: `tfds.features.Image`, JPEG-encoded, 3 channels. With `image_size=None` the
  catalog's own JPEG bytes are stored unchanged (other formats and modes are re-encoded as RGB
  JPEG) and the shape is `(None, None, 3)`; with `image_size=S` every image is resized to
  `S x S` (stretched, so `pipeline.decode_image`'s letterboxing then has nothing to pad) and
  the shape is `(S, S, 3)`.
- `has_image`: bool. An item without an image is legal, and a TFDS feature cannot be absent,
  so such items store a black placeholder JPEG (1 x 1, or S x S with a fixed size) and
  `has_image=False`. Readers must look at `has_image`, never at the pixels:
  `pipeline.stored_image` (used by `pipeline.tfds_split_dataset` and the streaming training
  input) turns those images into zeros.
- one Text feature per declared attribute column (missing attribute values are "").

Constructor arguments: `tfds.core.DatasetBuilder.__init__` (tensorflow_datasets 4.9.10) only
takes `data_dir`, `config`, `version`, and builds `info` (hence `_info()`) lazily from them, so
the catalog, splits and feature choices are keyword arguments of `CatalogDataset.__init__`,
stored before `super().__init__` runs. A BuilderConfig would have to be a frozen, named,
versioned object per catalog, which does not fit a catalog chosen at run time.

Offline: TFDS 4.9.10 has its GCS lookups disabled (`gcs_utils._is_gcs_disabled`), and
`prepare_catalog_dataset` also passes `DownloadConfig(try_download_gcs=False)`; the builder never
calls the download manager. Reading back uses `tfds.builder_from_directory`, which rebuilds the
features (attribute columns included) from the prepared directory, with no catalog needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import tensorflow as tf
from etils import epath
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from tfmmsearch.data.schema import Catalog, CatalogError, Product, products_by_id
from tfmmsearch.progress import is_terminal

DATASET_NAME = "catalog_dataset"
DATASET_VERSION = "1.0.0"
CORE_FEATURES = ("product_id", "title", "image", "has_image")
JPEG_QUALITY = 95
FINGERPRINT_KEY = "catalog_fingerprint"

_FEATURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class CatalogDataset(tfds.core.GeneratorBasedBuilder):
    """Products of one catalog as a TFDS dataset, with product-level splits.

    Build it through `prepare_catalog_dataset`; read it through `load_catalog_split`.
    """

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {DATASET_VERSION: "Products: id, title, JPEG image, has_image, attributes."}
    # TFDS finds a builder's source through `importlib_resources` (an optional etils extra
    # that the pinned stack does not install); naming the file directly avoids that import.
    code_path = epath.Path(__file__)

    def __init__(self, *, products: Sequence[Product] = (),
                 splits: Mapping[str, Sequence[str]] | None = None,
                 attribute_columns: Sequence[str] = (), image_size: int | None = None,
                 source: str | Path | None = None, fingerprint: str = "", **kwargs):
        self._products = {product.product_id: product for product in products}
        self._split_ids = {name: list(ids) for name, ids in (splits or {}).items()}
        self._attribute_columns = tuple(attribute_columns)
        self._image_size = image_size
        self._source = source
        self._fingerprint = fingerprint
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        shape = (None, None, 3) if self._image_size is None else (
            self._image_size, self._image_size, 3)
        features = {
            "product_id": tfds.features.Text(),
            "title": tfds.features.Text(),
            "image": tfds.features.Image(shape=shape, encoding_format="jpeg"),
            "has_image": tfds.features.Scalar(dtype=tf.bool),
        }
        for column in self._attribute_columns:
            features[column] = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Catalog products. Items without an image hold a black placeholder JPEG and "
                "has_image=False."),
            features=tfds.features.FeaturesDict(features),
            # Keep the generation order: a split reads back in the order of its id list, and
            # shuffling is the pipeline's job (seeded there).
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict({
                FINGERPRINT_KEY: self._fingerprint,
                "attribute_columns": list(self._attribute_columns),
                "image_size": self._image_size,
                "empty_splits": sorted(name for name, ids in self._split_ids.items() if not ids),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the catalog is local
        # TFDS cannot write a split without examples; empty ones are listed in the metadata
        # instead, and `load_catalog_split` serves them as empty datasets.
        return {name: self._generate_examples(ids) for name, ids in self._split_ids.items()
                if ids}

    def _generate_examples(self, product_ids: Sequence[str]) -> Iterator[tuple[str, dict]]:
        for product_id in product_ids:
            product = self._products[product_id]
            if product.image_path is None:
                image = placeholder_jpeg(self._image_size)
            else:
                image = self._encoded_image(product)
            example = {
                "product_id": product.product_id,
                "title": product.title,
                "image": image,
                "has_image": product.image_path is not None,
            }
            for column in self._attribute_columns:
                example[column] = product.attributes.get(column, "")
            yield product.product_id, example

    def _encoded_image(self, product: Product) -> bytes:
        """The JPEG bytes to store: the file itself when it already fits, else re-encoded."""
        path = Path(product.image_path)
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                if (self._image_size is None and image.format == "JPEG"
                        and image.mode in ("RGB", "L")):
                    return data
                image = image.convert("RGB")
                if self._image_size is not None:
                    image = image.resize((self._image_size, self._image_size),
                                         Image.Resampling.BILINEAR)
                return _jpeg_bytes(image)
        except (OSError, UnidentifiedImageError) as error:
            raise CatalogError(f"cannot read image {path}: {error}", file=self._source,
                               row=product.row or None, field="image",
                               reason="bad_image") from error


def placeholder_jpeg(image_size: int | None) -> bytes:
    """The black JPEG stored for items without an image (1 x 1 unless a size is fixed)."""
    side = 1 if image_size is None else image_size
    return _jpeg_bytes(Image.new("RGB", (side, side), (0, 0, 0)))


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --------------------------------------------------------------------------- validation


def _resolved_products(catalog: Catalog | Sequence[Product]) -> tuple[list[Product], Path | None]:
    """Products with image paths made absolute against the catalog root, and the source file."""
    if isinstance(catalog, Catalog):
        root = Path(catalog.root)
        products = []
        for product in catalog.products:
            if product.image_path is not None and not Path(product.image_path).is_absolute():
                product = Product(product.product_id, product.title, root / product.image_path,
                                  dict(product.attributes), product.row)
            products.append(product)
        return products, Path(catalog.source)
    return list(catalog), None


def _check_inputs(products: Sequence[Product], splits: Mapping[str, Sequence[str]],
                  attribute_columns: Sequence[str], image_size: int | None,
                  source: Path | None) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    for column in attribute_columns:
        if not _FEATURE_NAME.match(column) or column in CORE_FEATURES:
            raise ValueError(
                f"attribute column {column!r} cannot be a feature name: use letters, digits and "
                f"underscores, not one of {', '.join(CORE_FEATURES)}")
    if len(set(attribute_columns)) != len(attribute_columns):
        raise ValueError(f"attribute columns repeat a name: {list(attribute_columns)}")
    known = products_by_id(products, source)
    if not splits:
        raise ValueError("splits is empty: give at least one split name -> product ids")
    if not any(splits.values()):
        raise ValueError("every split is empty: there is nothing to prepare")
    owner: dict[str, str] = {}
    for name, ids in splits.items():
        if not isinstance(name, str) or not _SPLIT_NAME.match(name):
            raise ValueError(f"split name {name!r} must be letters, digits and underscores")
        for product_id in ids:
            if product_id not in known:
                raise CatalogError(f"split {name!r} names product_id {product_id!r}, which is "
                                   "not in the catalog", file=source, field="product_id",
                                   reason="unknown_id")
            if product_id in owner:
                raise ValueError(f"product_id {product_id!r} is in split {owner[product_id]!r} "
                                 f"and split {name!r}; splits must not share products")
            owner[product_id] = name
    for product_id in owner:
        path = known[product_id].image_path
        if path is not None and not Path(path).is_file():
            product = known[product_id]
            raise CatalogError(f"image file not found: {path}", file=source,
                               row=product.row or None, field="image", reason="missing_image")


def catalog_fingerprint(products: Sequence[Product], splits: Mapping[str, Sequence[str]],
                        attribute_columns: Sequence[str], image_size: int | None) -> str:
    """A hash of everything that shapes the prepared data, image file sizes and mtimes included.

    A prepared directory is reused only when its fingerprint matches, so editing the catalog
    or the splits rebuilds it instead of silently serving stale shards.
    """
    by_id = {product.product_id: product for product in products}
    digest = hashlib.sha256()

    def add(*parts) -> None:
        digest.update(json.dumps(parts, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")

    add("v1", image_size, list(attribute_columns), JPEG_QUALITY)
    for name in sorted(splits):
        add("split", name, len(splits[name]))
        for product_id in splits[name]:
            product = by_id[product_id]
            image = None
            if product.image_path is not None:
                stat = Path(product.image_path).stat()
                image = [str(product.image_path), stat.st_size, stat.st_mtime_ns]
            add(product_id, product.title, image,
                [product.attributes.get(column, "") for column in attribute_columns])
    return digest.hexdigest()


# --------------------------------------------------------------------------- public API


def catalog_dataset_dir(data_dir: str | Path) -> Path:
    """Where `prepare_catalog_dataset(..., data_dir)` writes: data_dir/catalog_dataset/1.0.0."""
    return Path(data_dir) / DATASET_NAME / DATASET_VERSION


def _stored_metadata(dataset_dir: str | Path) -> dict:
    """The builder's metadata.json (fingerprint, empty splits, ...), or {} if unreadable."""
    metadata_file = Path(dataset_dir) / "metadata.json"
    try:
        metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def prepare_catalog_dataset(catalog: Catalog | Sequence[Product],
                            splits: Mapping[str, Sequence[str]], data_dir: str | Path,
                            attribute_columns: Sequence[str] = (), *,
                            image_size: int | None = None) -> CatalogDataset:
    """Writes the catalog's splits as TFDS shards under `data_dir` offline; returns the builder.

    `splits` maps a split name (train/validation/test, or any word) to product ids; a product
    may be in at most one split, and products in no split are left out. A directory prepared
    from the same catalog, splits and options is reused; a different one is replaced. Run it
    once (e.g. on the chief) before workers read: concurrent preparations of one directory race.
    """
    products, source = _resolved_products(catalog)
    attribute_columns = tuple(attribute_columns)
    _check_inputs(products, splits, attribute_columns, image_size, source)
    fingerprint = catalog_fingerprint(products, splits, attribute_columns, image_size)
    dataset_dir = catalog_dataset_dir(data_dir)
    if dataset_dir.exists() and _stored_metadata(dataset_dir).get(FINGERPRINT_KEY) != fingerprint:
        shutil.rmtree(dataset_dir)
    builder = CatalogDataset(data_dir=str(data_dir), products=products, splits=splits,
                             attribute_columns=attribute_columns, image_size=image_size,
                             source=source, fingerprint=fingerprint)
    if not is_terminal():  # TFDS's own tqdm bars would flood a log file with redraws
        tfds.disable_progress_bar()
    builder.download_and_prepare(
        download_dir=str(Path(data_dir) / "downloads"),
        download_config=tfds.download.DownloadConfig(
            try_download_gcs=False,
            compute_stats=tfds.download.ComputeStatsMode.SKIP,
            download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
        ),
    )
    return builder


def open_catalog_dataset(source: str | Path | tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
    """A reader for a prepared catalog: a builder as is, or a data_dir / dataset directory."""
    if isinstance(source, tfds.core.DatasetBuilder):
        return source
    path = Path(source)
    if not (path / "dataset_info.json").is_file():
        path = catalog_dataset_dir(path)
    if not (path / "dataset_info.json").is_file():
        raise FileNotFoundError(
            f"no prepared catalog dataset at {source} (looked for dataset_info.json there and "
            f"in {path}); run prepare_catalog_dataset first")
    return tfds.builder_from_directory(str(path))


def load_catalog_split(source: str | Path | tfds.core.DatasetBuilder, split: str, *,
                       decode_image: bool = True) -> tf.data.Dataset:
    """One split as unbatched example dicts, in prepared order.

    With `decode_image=False` the `image` feature is the stored JPEG bytes (a scalar string),
    for pipelines that decode and resize in their own graph. A split prepared empty gives an
    empty dataset with the usual element structure.
    """
    builder = open_catalog_dataset(source)
    decoders = None if decode_image else {"image": tfds.decode.SkipDecoding()}
    written = list(builder.info.splits.keys())
    if split in written:
        return builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    empty_splits = _stored_metadata(builder.data_dir).get("empty_splits", [])
    if split in empty_splits:
        return builder.as_dataset(split=written[0], decoders=decoders).take(0)
    known = sorted([*written, *empty_splits])
    raise KeyError(f"split {split!r} is not in {builder.data_dir} (splits: {', '.join(known)})")


def split_size(source: str | Path | tfds.core.DatasetBuilder, split: str) -> int:
    """How many products a prepared split holds (0 for a split prepared empty)."""
    builder = open_catalog_dataset(source)
    if split in list(builder.info.splits.keys()):
        return builder.info.splits[split].num_examples
    if split in _stored_metadata(builder.data_dir).get("empty_splits", []):
        return 0
    raise KeyError(f"split {split!r} is not in {builder.data_dir}")

