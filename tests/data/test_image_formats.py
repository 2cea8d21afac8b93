"""Image formats: every format the catalog validator accepts decodes in the graph (with the
pixels PIL sees), everything the graph cannot decode is rejected by the validator naming the
row, and bytes of no known format fail in the graph naming the image."""

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from tfmmsearch.data.catalog import read_catalog, write_catalog  # noqa: E402
from tfmmsearch.data.pipeline import decode_image, letterbox, read_image  # noqa: E402
from tfmmsearch.data.schema import CatalogError, graph_image_problem  # noqa: E402

SIDE = 8
PIXELS = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)


def _encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _rgb(pixels=PIXELS) -> Image.Image:
    return Image.fromarray(pixels, "RGB")


def _animation(image_format: str, **options) -> bytes:
    """Two frames: PIXELS, then their negative."""
    return _encode(_rgb(), image_format, save_all=True, append_images=[_rgb(255 - PIXELS)],
                   duration=100, **options)


def _bitfields_bmp() -> bytes:
    """A 32-bit BI_BITFIELDS BMP with BGRA masks, as Windows and GIMP write (PIL cannot)."""
    plain = _encode(_rgb().convert("RGBA"), "BMP")
    header, pixels = bytearray(plain[:54]), plain[54:]
    masks = struct.pack("<III", 0x00FF0000, 0x0000FF00, 0x000000FF)
    struct.pack_into("<I", header, 30, 3)  # compression: BI_BITFIELDS
    struct.pack_into("<I", header, 10, 54 + len(masks))  # pixel data offset
    struct.pack_into("<I", header, 2, 54 + len(masks) + len(pixels))  # file size
    return bytes(header) + masks + pixels


# name -> (bytes, decodes in the graph)
SAMPLES = {
    "jpeg": (_encode(_rgb(), "JPEG", quality=95), True),
    "jpeg_progressive": (_encode(_rgb(), "JPEG", progressive=True), True),
    "jpeg_grey": (_encode(_rgb().convert("L"), "JPEG"), True),
    "jpeg_cmyk": (_encode(_rgb().convert("CMYK"), "JPEG"), True),
    "png": (_encode(_rgb(), "PNG"), True),
    "png_rgba": (_encode(_rgb().convert("RGBA"), "PNG"), True),
    "png_palette": (_encode(_rgb().convert("P"), "PNG"), True),
    "png_grey_alpha": (_encode(_rgb().convert("LA"), "PNG"), True),
    "gif": (_encode(_rgb().convert("P"), "GIF"), True),
    "gif_animated": (_animation("GIF"), True),
    "bmp_24": (_encode(_rgb(), "BMP"), True),
    "bmp_32": (_encode(_rgb().convert("RGBA"), "BMP"), True),
    "bmp_bitfields": (_bitfields_bmp(), True),
    "webp_lossy": (_encode(_rgb(), "WEBP", quality=90), True),
    "webp_lossless": (_encode(_rgb(), "WEBP", lossless=True), True),
    "webp_alpha": (_encode(Image.fromarray(np.dstack([PIXELS, np.full((SIDE, SIDE), 128,
                                                                      np.uint8)]), "RGBA"),
                           "WEBP", lossless=True), True),
    "bmp_palette": (_encode(_rgb().convert("P"), "BMP"), False),  # TF would get colours wrong
    "bmp_1bit": (_encode(_rgb().convert("1"), "BMP"), False),
    "webp_animated": (_animation("WEBP", lossless=True), False),
    "tiff": (_encode(_rgb(), "TIFF"), False),
    "garbage": (b"these bytes are no image at all", False),
    "short_bmp_magic": (b"BM", False),
}


def _decodes_in_graph(data: bytes) -> bool:
    try:
        decode_image(tf.constant(data), SIDE)
    except tf.errors.InvalidArgumentError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_validator_and_the_graph_agree(name):
    data, decodable = SAMPLES[name]
    assert (graph_image_problem(data) is None) == decodable
    if name != "webp_animated":  # never handed to TF's WebP decoder: it corrupts the heap
        assert _decodes_in_graph(data) == decodable
    else:
        assert not _decodes_in_graph(data)  # the graph's own check stops it first


@pytest.mark.parametrize("name", ["png", "png_rgba", "png_palette", "gif", "bmp_24", "bmp_32",
                                  "bmp_bitfields", "webp_lossless", "webp_alpha"])
def test_lossless_formats_decode_to_their_exact_pixels(name):
    # Square, so the letterbox adds nothing and the resize keeps the size.
    data, _ = SAMPLES[name]
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))[..., :3] / 255.0
    np.testing.assert_allclose(decode_image(tf.constant(data), SIDE).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["jpeg", "jpeg_progressive", "jpeg_grey", "jpeg_cmyk",
                                  "webp_lossy"])
def test_lossy_formats_decode_close_to_what_pil_sees(name):
    data, _ = SAMPLES[name]
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) / 255.0
    np.testing.assert_allclose(decode_image(tf.constant(data), SIDE).numpy(), expected,
                               atol=8 / 255)  # libjpeg builds upsample chroma differently


def test_an_animated_gif_decodes_to_its_first_frame():
    data, _ = SAMPLES["gif_animated"]
    decoded = decode_image(tf.constant(data), SIDE).numpy()
    np.testing.assert_allclose(decoded, PIXELS / 255.0, atol=1e-6)
    assert np.abs(decoded - (255 - PIXELS) / 255.0).max() > 0.5  # not the second frame


@pytest.mark.parametrize("name", ["jpeg", "png", "png_rgba", "gif"])
def test_jpeg_png_gif_pixels_are_those_of_the_old_decode_jpeg_path(name):
    # Feature caches are keyed on IMAGE_DECODING, which stays the same only if this holds.
    data, _ = SAMPLES[name]
    wide = _encode(Image.fromarray(np.tile(PIXELS, (1, 2, 1))), "PNG") if name == "png" else data
    for payload in {data, wide}:
        old = tf.image.convert_image_dtype(tf.io.decode_jpeg(payload, channels=3), tf.float32)
        old = tf.clip_by_value(tf.image.resize(letterbox(old), [5, 5], antialias=True), 0.0, 1.0)
        np.testing.assert_array_equal(decode_image(tf.constant(payload), 5).numpy(), old.numpy())


def test_garbage_bytes_fail_naming_the_batch_position():
    good = SAMPLES["png"][0]

    @tf.function
    def decode_batch(images):
        positions = tf.range(tf.shape(images)[0])
        return tf.map_fn(lambda args: decode_image(args[0], SIDE, position=args[1]),
                         (images, positions),
                         fn_output_signature=tf.TensorSpec([SIDE, SIDE, 3], tf.float32))

    assert decode_batch(tf.constant([good, b"", good])).shape == (3, SIDE, SIDE, 3)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image at batch position 1 is not a JPEG, PNG, GIF, BMP or WEBP "
                             r"file; its first bytes are these by"):
        decode_batch(tf.constant([good, b"these bytes are no image", good]))


def test_unsupported_variants_fail_in_the_graph_saying_why(tmp_path):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image at batch position 4 is a BMP with a palette"):
        decode_image(tf.constant(SAMPLES["bmp_palette"][0]), SIDE, position=4)
    path = tmp_path / "anim.webp"
    path.write_bytes(SAMPLES["webp_animated"][0])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"image {path} is an animated WEBP; only still WEBP decodes"):
        read_image(tf.constant(str(path)), SIDE)


def _catalog(root: Path, names: list[str]) -> None:
    (root / "images").mkdir(parents=True)
    rows = []
    for name in names:
        (root / "images" / f"{name}.img").write_bytes(SAMPLES[name][0])
        rows.append({"product_id": name, "title": f"item {name}", "image": f"images/{name}.img"})
    write_catalog(root, rows)


def test_the_validator_keeps_exactly_what_the_graph_decodes(tmp_path):
    names = sorted(SAMPLES)
    _catalog(tmp_path / "catalog", names)
    catalog = read_catalog(tmp_path / "catalog", on_bad_row="skip")
    kept = sorted(product.product_id for product in catalog.products)
    assert kept == sorted(name for name in names if SAMPLES[name][1])
    assert dict(catalog.report.skipped) == {"unsupported_image_format": 4,
                                            "undecodable_image": 2}


@pytest.mark.parametrize("name, words", [
    ("bmp_palette", "is a BMP with 8 bits per pixel and compression 0; only uncompressed 24- or "
                    "32-bit BMP decodes"),
    ("webp_animated", "is an animated WEBP; only still WEBP decodes"),
    ("tiff", "is not a JPEG, PNG, GIF, BMP or WEBP file"),
])
def test_the_validator_names_file_row_and_field_of_an_undecodable_image(tmp_path, name, words):
    root = tmp_path / "catalog"
    _catalog(root, ["png", name])
    with pytest.raises(CatalogError) as caught:
        read_catalog(root)
    message = str(caught.value)
    assert "products.csv, row 2, field 'image'" in message
    assert f"images/{name}.img" in message and words in message
    assert caught.value.reason == "unsupported_image_format"
