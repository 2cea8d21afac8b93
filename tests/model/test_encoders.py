"""Raw-input encoders: the colour histogram added to image features."""

import numpy as np
import pytest
import tensorflow as tf

from tfmmsearch.config import ImageTowerConfig
from tfmmsearch.model.encoders import ColourHistogram, build_image_encoder


def _image(colour, size=32, border=None):
    pixels = np.ones((size, size, 3), np.float32)  # white background
    pixels[8:24, 8:24] = colour
    if border is not None:
        pixels[:4] = border
    return pixels


def test_colour_histogram_counts_foreground_colours_only():
    layer = ColourHistogram(bins=2)
    red = _image([0.9, 0.1, 0.1])
    hist = layer(tf.constant(red[None])).numpy()[0]
    assert hist.shape == (8,)
    red_bin = (1 * 2 + 0) * 2 + 0
    assert hist[red_bin] == pytest.approx(1.0)  # the white background is left out
    assert hist.sum() == pytest.approx(1.0)

    half = _image([0.1, 0.1, 0.9])
    half[8:16, 8:24] = [0.9, 0.1, 0.1]  # top half of the product red, bottom half blue
    hist = layer(tf.constant(half[None])).numpy()[0]
    blue_bin = (0 * 2 + 0) * 2 + 1
    assert hist[red_bin] == pytest.approx(np.sqrt(0.5), abs=0.02)
    assert hist[blue_bin] == pytest.approx(np.sqrt(0.5), abs=0.02)


def test_an_all_white_image_counts_every_pixel():
    hist = ColourHistogram(bins=2)(tf.ones([1, 16, 16, 3])).numpy()[0]
    assert hist[-1] == pytest.approx(1.0) and hist[:-1].sum() == 0.0


def test_image_encoder_appends_the_histogram(tiny_hub_cache):
    plain = build_image_encoder(ImageTowerConfig(handle="tiny-image", image_size=32), tiny_hub_cache)
    coloured = build_image_encoder(ImageTowerConfig(handle="tiny-image", image_size=32,
                                                    colour_histogram_bins=3), tiny_hub_cache)
    images = tf.constant(np.stack([_image([0.9, 0.1, 0.1]), _image([0.1, 0.1, 0.9])]))
    base, extended = plain(images).numpy(), coloured(images).numpy()
    assert extended.shape == (2, base.shape[1] + 27)
    np.testing.assert_allclose(extended[:, :base.shape[1]], base, atol=1e-5)
    assert not np.allclose(extended[0, base.shape[1]:], extended[1, base.shape[1]:])
