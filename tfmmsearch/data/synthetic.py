"""The embedded synthetic catalog: procedurally drawn product photos with grammar-made titles.

The demo and the tests need a catalog that ships with the code, trains in minutes on a laptop
and still makes both modalities matter. So every product is drawn with PIL (a silhouette per
article type, a named base colour, a pattern, small pose jitter on a light background) and
titled from a small grammar. Some titles leave out the colour or the article type on purpose,
so only the photo carries it; a few items lack a title or a photo, to exercise the
one-modality path. The vocabularies follow Myntra's column values (article types, base
colours, genders, usages), so queries and grades built for the real catalog work here too.
Each item also has a brand (the one its title starts with) and a price that follows its
article type and its brand's tier; a few prices are left empty, as real exports leave them.

On disk it is a regular catalog directory: products.csv plus images/<product_id>.jpg.
Everything is a pure function of (num_items, seed, image_size): same arguments, same bytes.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

# --------------------------------------------------------------------------- vocabularies

CSV_COLUMNS = ("product_id", "title", "gender", "master_category", "article_type",
               "base_colour", "usage", "brand", "price", "image")
MASTER_CATEGORIES = ("Apparel", "Footwear", "Accessories")
GENDERS = ("Men", "Women", "Unisex")
USAGES = ("Casual", "Sports", "Formal", "Party")
PATTERNS = ("solid", "stripes", "dots", "checks")

# Named base colours (Myntra's base_colour spelling) and the RGB they are painted with. The
# values are far enough apart that the nearest named colour of a painted pixel is its own name.
COLOURS: dict[str, tuple[int, int, int]] = {
    "Black": (28, 28, 30),
    "White": (250, 250, 248),
    "Blue": (40, 100, 225),
    "Navy Blue": (22, 32, 92),
    "Red": (212, 30, 40),
    "Green": (36, 150, 64),
    "Yellow": (246, 208, 36),
    "Pink": (242, 128, 182),
    "Grey": (128, 128, 132),
    "Brown": (122, 74, 38),
    "Purple": (120, 48, 162),
}
# Formal items come in sober colours only (a plausible constraint, and one queries can test).
FORMAL_COLOURS = ("Black", "White", "Blue", "Navy Blue", "Grey", "Brown")
FORMAL_PATTERNS = ("solid", "stripes", "checks")  # no polka-dot formal wear


@dataclass(frozen=True)
class ArticleType:
    """One article type: where it sits in the catalog, who wears it, for what, how titles name it."""

    master_category: str
    genders: tuple[str, ...]
    usages: tuple[str, ...]
    title_nouns: tuple[str, ...]  # every phrase a title may use to name the type
    patterned: bool  # whether stripes/dots/checks make sense on it
    base_price: float  # a mid-tier brand's typical price, before per-item jitter


ARTICLE_TYPES: dict[str, ArticleType] = {
    "Tshirts": ArticleType("Apparel", ("Men", "Women", "Unisex"), ("Casual", "Sports"),
                           ("T-shirt", "Tshirt", "Round Neck T-shirt", "Polo T-shirt"), True, 599),
    "Shirts": ArticleType("Apparel", ("Men", "Women"), ("Casual", "Formal", "Party"),
                          ("Shirt", "Slim Fit Shirt", "Regular Fit Shirt"), True, 1199),
    "Trousers": ArticleType("Apparel", ("Men", "Women"), ("Casual", "Formal"),
                            ("Trousers", "Chinos", "Slim Fit Trousers"), True, 1399),
    "Dresses": ArticleType("Apparel", ("Women",), ("Casual", "Party"),
                           ("Dress", "A-Line Dress", "Fit and Flare Dress"), True, 1799),
    "Casual Shoes": ArticleType("Footwear", ("Men", "Women", "Unisex"), ("Casual",),
                                ("Casual Shoes", "Sneakers"), False, 2199),
    "Sports Shoes": ArticleType("Footwear", ("Men", "Women", "Unisex"), ("Sports",),
                                ("Sports Shoes", "Running Shoes", "Training Shoes"), False, 2999),
    "Formal Shoes": ArticleType("Footwear", ("Men",), ("Formal",),
                                ("Formal Shoes", "Derby Shoes", "Oxford Shoes"), False, 2799),
    "Heels": ArticleType("Footwear", ("Women",), ("Casual", "Party", "Formal"),
                         ("Heels", "Stilettos", "Pumps"), False, 1899),
    "Watches": ArticleType("Accessories", ("Men", "Women", "Unisex"), ("Casual", "Formal", "Sports"),
                           ("Watch", "Analog Watch"), False, 3499),
    "Handbags": ArticleType("Accessories", ("Women",), ("Casual", "Party", "Formal"),
                            ("Handbag", "Tote Bag", "Shoulder Bag"), True, 1999),
    "Sunglasses": ArticleType("Accessories", ("Men", "Women", "Unisex"), ("Casual", "Sports"),
                              ("Sunglasses", "Round Sunglasses"), False, 1499),
    "Caps": ArticleType("Accessories", ("Men", "Women", "Unisex"), ("Casual", "Sports"),
                        ("Cap", "Baseball Cap"), True, 449),
}

# Brand -> price tier. Budget brands undercut the type's base price, premium ones double it,
# so price carries a signal about brand that a ranker could learn.
BRAND_TIERS: dict[str, str] = {
    "Zentra": "budget", "Halvik": "mid", "Norvelle": "premium", "Orbique": "budget",
    "Veyra": "mid", "Tessaro": "premium", "Lumora": "budget", "Cadrix": "mid",
    "Fennwick": "mid", "Solvane": "premium",
}
BRANDS = tuple(BRAND_TIERS)
TIER_PRICE_FACTORS = {"budget": 0.6, "mid": 1.0, "premium": 2.0}
PRICE_JITTER = 0.15  # sigma of the log-normal factor on an item's price
MIN_PRICE = 99
PATTERN_TITLE_WORDS = {"solid": "Solid", "stripes": "Striped", "dots": "Polka Dot", "checks": "Checked"}
USAGE_TITLE_WORDS = {"Casual": "Casual", "Sports": "Sports", "Formal": "Formal", "Party": "Party"}
# Stand-ins for the article type in titles that omit it: they name no type, colour or category.
TYPE_FREE_PHRASES = ("Classic Fit", "Signature Edit", "Everyday Essential", "Premium Collection",
                     "Seasonal Pick", "Limited Edition")

OMIT_COLOUR_FRACTION = 0.15
OMIT_TYPE_FRACTION = 0.10
EMPTY_TITLE_FRACTION = 0.02
NO_IMAGE_FRACTION = 0.02
EMPTY_PRICE_FRACTION = 0.03
FIRST_PRODUCT_ID = 100001
JPEG_QUALITY = 92
_SUPERSAMPLE = 2  # draw at 2x and box-downsample: smooth edges at about half of 3x's cost
_FULLY_INSIDE = [0] * 255 + [255]  # point() table: keep only pixels whose blur stayed at 255


# --------------------------------------------------------------------------- item plan


@dataclass(frozen=True)
class SyntheticItem:
    """Everything about one generated product, including what products.csv does not record."""

    index: int
    product_id: str
    title: str
    gender: str
    master_category: str
    article_type: str
    base_colour: str
    usage: str
    pattern: str
    brand: str
    price: str  # decimal string such as "1299.00"; empty when the catalog does not know it
    has_image: bool
    title_omits_colour: bool
    title_omits_type: bool

    @property
    def image(self) -> str:
        """The `image` column: a path relative to the catalog directory, empty without a photo."""
        return f"images/{self.product_id}.jpg" if self.has_image else ""

    def csv_row(self) -> list[str]:
        return [self.product_id, self.title, self.gender, self.master_category, self.article_type,
                self.base_colour, self.usage, self.brand, self.price, self.image]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _chosen_indices(rng: np.random.Generator, num_items: int, fraction: float) -> set[int]:
    """Exactly round(fraction * n) distinct items, so small catalogs still get their share."""
    count = int(round(fraction * num_items))
    return set(int(i) for i in rng.permutation(num_items)[:count])


def _compose_title(rng: np.random.Generator, brand: str, gender: str, colour: str, pattern: str,
                   usage: str, spec: ArticleType, omit_colour: bool, omit_type: bool) -> str:
    words = [brand]
    if gender != "Unisex" or rng.random() < 0.5:
        words.append(gender)
    if not omit_colour:
        words.append(colour)
    if pattern != "solid" or rng.random() < 0.3:
        words.append(PATTERN_TITLE_WORDS[pattern])
    if omit_type:
        words.append(_pick(rng, TYPE_FREE_PHRASES))
    else:
        noun = _pick(rng, spec.title_nouns)
        usage_word = USAGE_TITLE_WORDS[usage]
        if rng.random() < 0.4 and usage_word.lower() not in noun.lower():
            words.append(usage_word)
        words.append(noun)
    return " ".join(words)


def _price(rng: np.random.Generator, spec: ArticleType, brand: str) -> str:
    """The type's base price times the brand tier's factor and a jitter, ending in 9 like a
    shop's price (1249.00, 2999.00)."""
    raw = spec.base_price * TIER_PRICE_FACTORS[BRAND_TIERS[brand]] * rng.lognormal(0.0, PRICE_JITTER)
    return f"{max(MIN_PRICE, int(round(raw / 50)) * 50 - 1):.2f}"


def plan_synthetic_items(num_items: int = 2000, seed: int = 0) -> list[SyntheticItem]:
    """The attributes and titles of every item, without drawing anything (cheap, deterministic).

    Each item's attributes come from its own stream (seed, index), so a smaller catalog's items
    are the first items of a larger one; only which titles omit words (and which prices are
    empty) depends on num_items. Prices draw from a stream of their own, (seed, 3, index).
    """
    _check_positive_int("num_items", num_items)
    _check_seed(seed)
    rng = np.random.default_rng([seed, 0])
    omit_colour = _chosen_indices(rng, num_items, OMIT_COLOUR_FRACTION)
    omit_type = _chosen_indices(rng, num_items, OMIT_TYPE_FRACTION)
    # One permutation for both missing modalities keeps the two sets disjoint: never both empty.
    order = rng.permutation(num_items)
    num_empty_titles = int(round(EMPTY_TITLE_FRACTION * num_items))
    num_no_images = int(round(NO_IMAGE_FRACTION * num_items))
    empty_title = set(int(i) for i in order[:num_empty_titles])
    no_image = set(int(i) for i in order[num_empty_titles:num_empty_titles + num_no_images])
    empty_price = _chosen_indices(rng, num_items, EMPTY_PRICE_FRACTION)

    type_names = tuple(ARTICLE_TYPES)
    items = []
    for index in range(num_items):
        item_rng = np.random.default_rng([seed, 2, index])
        article_type = _pick(item_rng, type_names)
        spec = ARTICLE_TYPES[article_type]
        gender = _pick(item_rng, spec.genders)
        usage = _pick(item_rng, spec.usages)
        colour = _pick(item_rng, FORMAL_COLOURS if usage == "Formal" else tuple(COLOURS))
        pattern = "solid"
        if spec.patterned and item_rng.random() < 0.45:
            pattern = _pick(item_rng, FORMAL_PATTERNS[1:] if usage == "Formal" else PATTERNS[1:])
        brand = _pick(item_rng, BRANDS)
        title = _compose_title(item_rng, brand, gender, colour, pattern, usage, spec,
                               index in omit_colour, index in omit_type)
        if index in empty_title:
            title = ""
        price = "" if index in empty_price else _price(np.random.default_rng([seed, 3, index]),
                                                        spec, brand)
        items.append(SyntheticItem(
            index=index, product_id=str(FIRST_PRODUCT_ID + index), title=title, gender=gender,
            master_category=spec.master_category, article_type=article_type, base_colour=colour,
            usage=usage, pattern=pattern, brand=brand, price=price, has_image=index not in no_image,
            title_omits_colour=index in omit_colour, title_omits_type=index in omit_type))
    return items


def synthetic_texts(num_items: int = 2000, seed: int = 0) -> list[str]:
    """Titles plus every vocabulary phrase: text to learn a tiny tokenizer's vocabulary from."""
    texts = [item.title for item in plan_synthetic_items(num_items, seed) if item.title]
    texts += list(COLOURS) + list(ARTICLE_TYPES) + list(MASTER_CATEGORIES) + list(GENDERS)
    texts += list(USAGES) + list(BRANDS) + list(PATTERN_TITLE_WORDS.values()) + list(TYPE_FREE_PHRASES)
    texts += [noun for spec in ARTICLE_TYPES.values() for noun in spec.title_nouns]
    return texts


# --------------------------------------------------------------------------- drawing


def _luminance(rgb: tuple[int, int, int]) -> float:
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0


def _blend(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _shade(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A seam/outline colour: darker for light colours, lighter for very dark ones."""
    return _blend(rgb, (255, 255, 255), 0.35) if _luminance(rgb) < 0.2 else _blend(rgb, (0, 0, 0), 0.35)


def _accent(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A contrasting trim colour (soles, dials, laces) that reads against the base colour."""
    return (48, 46, 50) if _luminance(rgb) > 0.6 else (242, 240, 234)


class _Pen:
    """Maps shape coordinates in the unit square to canvas pixels under one item's pose jitter."""

    def __init__(self, canvas: int, scale: float, aspect: float, shift: tuple[float, float],
                 mirrored: bool):
        self.canvas = canvas
        self.scale = scale
        self.aspect = aspect
        self.shift = shift
        self.mirrored = mirrored

    def pt(self, x: float, y: float) -> tuple[float, float]:
        if self.mirrored:
            x = 1.0 - x
        size = self.canvas * self.scale
        return (self.canvas / 2 + (x - 0.5) * size * self.aspect + self.shift[0] * self.canvas,
                self.canvas / 2 + (y - 0.5) * size + self.shift[1] * self.canvas)

    def pts(self, points) -> list[tuple[float, float]]:
        return [self.pt(x, y) for x, y in points]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        (ax, ay), (bx, by) = self.pt(x0, y0), self.pt(x1, y1)
        return [min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)]

    def width(self, w: float) -> int:
        return max(1, int(round(w * self.canvas * self.scale)))


@dataclass
class _Inks:
    base: tuple[int, int, int]
    shade: tuple[int, int, int]
    accent: tuple[int, int, int]


# Each shape draws its silhouette into `mask` (255 = product, 0 = cut out) and its trim
# (seams, soles, dials, laces) onto `detail`, an RGBA layer painted over the filled silhouette.
_Shape = Callable[[_Pen, ImageDraw.ImageDraw, ImageDraw.ImageDraw, _Inks], None]


def _draw_tshirt(pen, mask, detail, ink):
    mask.polygon(pen.pts([(0.40, 0.16), (0.27, 0.20), (0.08, 0.35), (0.16, 0.48), (0.28, 0.41),
                          (0.28, 0.88), (0.72, 0.88), (0.72, 0.41), (0.84, 0.48), (0.92, 0.35),
                          (0.73, 0.20), (0.60, 0.16)]), fill=255)
    mask.ellipse(pen.box(0.40, 0.07, 0.60, 0.25), fill=0)
    detail.arc(pen.box(0.39, 0.06, 0.61, 0.27), 0, 180, fill=ink.shade, width=pen.width(0.02))
    detail.line(pen.pts([(0.16, 0.46), (0.10, 0.37)]), fill=ink.shade, width=pen.width(0.015))
    detail.line(pen.pts([(0.84, 0.46), (0.90, 0.37)]), fill=ink.shade, width=pen.width(0.015))


def _draw_shirt(pen, mask, detail, ink):
    mask.polygon(pen.pts([(0.38, 0.15), (0.24, 0.19), (0.12, 0.30), (0.06, 0.82), (0.16, 0.84),
                          (0.24, 0.42), (0.26, 0.90), (0.74, 0.90), (0.76, 0.42), (0.84, 0.84),
                          (0.94, 0.82), (0.88, 0.30), (0.76, 0.19), (0.62, 0.15)]), fill=255)
    collar_width = pen.width(0.012)
    detail.polygon(pen.pts([(0.38, 0.13), (0.50, 0.30), (0.42, 0.30), (0.34, 0.19)]),
                   fill=ink.base, outline=ink.shade, width=collar_width)
    detail.polygon(pen.pts([(0.62, 0.13), (0.50, 0.30), (0.58, 0.30), (0.66, 0.19)]),
                   fill=ink.base, outline=ink.shade, width=collar_width)
    detail.line(pen.pts([(0.50, 0.30), (0.50, 0.90)]), fill=ink.shade, width=pen.width(0.012))
    for y in (0.40, 0.52, 0.64, 0.76):
        detail.ellipse(pen.box(0.485, y - 0.015, 0.515, y + 0.015), fill=ink.accent)
    detail.rectangle(pen.box(0.57, 0.38, 0.68, 0.50), outline=ink.shade, width=pen.width(0.01))


def _draw_trousers(pen, mask, detail, ink):
    mask.polygon(pen.pts([(0.28, 0.07), (0.72, 0.07), (0.77, 0.93), (0.57, 0.93), (0.50, 0.32),
                          (0.43, 0.93), (0.23, 0.93)]), fill=255)
    detail.line(pen.pts([(0.28, 0.14), (0.72, 0.14)]), fill=ink.shade, width=pen.width(0.015))
    detail.line(pen.pts([(0.50, 0.14), (0.50, 0.30)]), fill=ink.shade, width=pen.width(0.012))
    for x in (0.34, 0.50, 0.66):
        detail.line(pen.pts([(x, 0.07), (x, 0.14)]), fill=ink.shade, width=pen.width(0.012))


def _draw_dress(pen, mask, detail, ink):
    mask.polygon(pen.pts([(0.37, 0.20), (0.63, 0.20), (0.60, 0.42), (0.85, 0.92), (0.15, 0.92),
                          (0.40, 0.42)]), fill=255)
    mask.ellipse(pen.box(0.43, 0.12, 0.57, 0.29), fill=0)
    strap = pen.width(0.025)
    mask.line(pen.pts([(0.39, 0.21), (0.41, 0.07)]), fill=255, width=strap)
    mask.line(pen.pts([(0.61, 0.21), (0.59, 0.07)]), fill=255, width=strap)
    detail.line(pen.pts([(0.40, 0.42), (0.60, 0.42)]), fill=ink.shade, width=pen.width(0.015))


def _draw_casual_shoe(pen, mask, detail, ink):
    mask.polygon(pen.pts([(0.10, 0.70), (0.12, 0.42), (0.30, 0.36), (0.40, 0.42), (0.55, 0.50),
                          (0.80, 0.54), (0.90, 0.62), (0.90, 0.70)]), fill=255)
    detail.rounded_rectangle(pen.box(0.08, 0.68, 0.92, 0.77), radius=pen.width(0.03), fill=ink.accent)
    for x in (0.40, 0.46, 0.52):
        detail.line(pen.pts([(x, 0.44), (x + 0.05, 0.52)]), fill=ink.accent, width=pen.width(0.012))
    detail.line(pen.pts([(0.11, 0.50), (0.30, 0.45)]), fill=ink.shade, width=pen.width(0.012))


def _draw_sports_shoe(pen, mask, detail, ink):
    mask.polygon(pen.pts([(0.10, 0.66), (0.12, 0.30), (0.28, 0.26), (0.36, 0.36), (0.52, 0.44),
                          (0.78, 0.50), (0.92, 0.60), (0.92, 0.66)]), fill=255)
    detail.rounded_rectangle(pen.box(0.08, 0.64, 0.94, 0.80), radius=pen.width(0.05), fill=ink.accent)
    detail.line(pen.pts([(0.12, 0.73), (0.30, 0.70), (0.50, 0.74), (0.70, 0.70), (0.90, 0.73)]),
                fill=ink.shade, width=pen.width(0.012))
    detail.polygon(pen.pts([(0.22, 0.60), (0.76, 0.50), (0.34, 0.56)]), fill=ink.accent)
    detail.rectangle(pen.box(0.10, 0.28, 0.15, 0.44), fill=ink.shade)


def _draw_formal_shoe(pen, mask, detail, ink):
    mask.polygon(pen.pts([(0.08, 0.64), (0.10, 0.39), (0.24, 0.37), (0.40, 0.43), (0.60, 0.48),
                          (0.84, 0.52), (0.94, 0.59), (0.92, 0.64)]), fill=255)
    sole = (46, 34, 28) if ink.base != COLOURS["Brown"] else (30, 24, 22)
    detail.rectangle(pen.box(0.08, 0.63, 0.94, 0.67), fill=sole)
    detail.rectangle(pen.box(0.09, 0.63, 0.22, 0.72), fill=sole)
    detail.line(pen.pts([(0.40, 0.44), (0.50, 0.57)]), fill=ink.shade, width=pen.width(0.012))
    detail.arc(pen.box(0.66, 0.50, 0.86, 0.66), 180, 270, fill=ink.shade, width=pen.width(0.012))


def _draw_heels(pen, mask, detail, ink):
    mask.polygon(pen.pts([(0.12, 0.28), (0.26, 0.30), (0.34, 0.46), (0.50, 0.56), (0.60, 0.54),
                          (0.78, 0.60), (0.92, 0.70), (0.90, 0.76), (0.60, 0.74), (0.40, 0.64),
                          (0.26, 0.52), (0.22, 0.50), (0.21, 0.88), (0.17, 0.88), (0.14, 0.50),
                          (0.12, 0.44)]), fill=255)
    detail.line(pen.pts([(0.20, 0.36), (0.32, 0.50), (0.55, 0.60)]), fill=ink.shade,
                width=pen.width(0.015))
    detail.rectangle(pen.box(0.16, 0.86, 0.22, 0.89), fill=ink.accent)


def _draw_watch(pen, mask, detail, ink):
    mask.rectangle(pen.box(0.40, 0.04, 0.60, 0.34), fill=255)
    mask.rectangle(pen.box(0.40, 0.66, 0.60, 0.96), fill=255)
    mask.ellipse(pen.box(0.28, 0.28, 0.72, 0.72), fill=255)
    mask.rectangle(pen.box(0.71, 0.47, 0.76, 0.53), fill=255)
    detail.ellipse(pen.box(0.35, 0.35, 0.65, 0.65), fill=ink.accent)
    for angle in range(0, 360, 90):
        x = 0.5 + 0.12 * math.cos(math.radians(angle))
        y = 0.5 + 0.12 * math.sin(math.radians(angle))
        detail.ellipse(pen.box(x - 0.01, y - 0.01, x + 0.01, y + 0.01), fill=ink.shade)
    hand = pen.width(0.015)
    detail.line(pen.pts([(0.5, 0.5), (0.5, 0.39)]), fill=ink.shade, width=hand)
    detail.line(pen.pts([(0.5, 0.5), (0.58, 0.55)]), fill=ink.shade, width=hand)
    for y in (0.76, 0.82, 0.88):
        detail.ellipse(pen.box(0.485, y - 0.012, 0.515, y + 0.012), fill=ink.shade)


def _draw_handbag(pen, mask, detail, ink):
    mask.polygon(pen.pts([(0.14, 0.40), (0.86, 0.40), (0.92, 0.88), (0.08, 0.88)]), fill=255)
    mask.arc(pen.box(0.28, 0.14, 0.72, 0.66), 180, 360, fill=255, width=pen.width(0.05))
    detail.line(pen.pts([(0.14, 0.40), (0.50, 0.58), (0.86, 0.40)]), fill=ink.shade,
                width=pen.width(0.015))
    detail.rectangle(pen.box(0.46, 0.56, 0.54, 0.63), fill=ink.accent)


def _draw_sunglasses(pen, mask, detail, ink):
    mask.ellipse(pen.box(0.08, 0.36, 0.46, 0.68), fill=255)
    mask.ellipse(pen.box(0.54, 0.36, 0.92, 0.68), fill=255)
    mask.arc(pen.box(0.42, 0.38, 0.58, 0.54), 200, 340, fill=255, width=pen.width(0.03))
    mask.line(pen.pts([(0.09, 0.44), (0.02, 0.40)]), fill=255, width=pen.width(0.025))
    mask.line(pen.pts([(0.91, 0.44), (0.98, 0.40)]), fill=255, width=pen.width(0.025))
    rim = pen.width(0.018)
    detail.ellipse(pen.box(0.08, 0.36, 0.46, 0.68), outline=ink.shade, width=rim)
    detail.ellipse(pen.box(0.54, 0.36, 0.92, 0.68), outline=ink.shade, width=rim)
    glare = (255, 255, 255, 150)
    detail.line(pen.pts([(0.16, 0.50), (0.24, 0.42)]), fill=glare, width=pen.width(0.02))
    detail.line(pen.pts([(0.62, 0.50), (0.70, 0.42)]), fill=glare, width=pen.width(0.02))


def _draw_cap(pen, mask, detail, ink):
    mask.chord(pen.box(0.16, 0.28, 0.72, 0.92), 180, 360, fill=255)
    mask.polygon(pen.pts([(0.60, 0.54), (0.94, 0.57), (0.92, 0.65), (0.60, 0.62)]), fill=255)
    detail.ellipse(pen.box(0.41, 0.26, 0.47, 0.31), fill=ink.shade)
    seam = pen.width(0.012)
    detail.arc(pen.box(0.30, 0.29, 0.58, 0.95), 200, 300, fill=ink.shade, width=seam)
    detail.line(pen.pts([(0.16, 0.58), (0.72, 0.58)]), fill=ink.shade, width=pen.width(0.02))


SHAPES: dict[str, _Shape] = {
    "Tshirts": _draw_tshirt, "Shirts": _draw_shirt, "Trousers": _draw_trousers,
    "Dresses": _draw_dress, "Casual Shoes": _draw_casual_shoe, "Sports Shoes": _draw_sports_shoe,
    "Formal Shoes": _draw_formal_shoe, "Heels": _draw_heels, "Watches": _draw_watch,
    "Handbags": _draw_handbag, "Sunglasses": _draw_sunglasses, "Caps": _draw_cap,
}


def _pattern_fill(canvas: int, pattern: str, ink: _Inks, rng: np.random.Generator) -> Image.Image:
    """The base colour with the pattern printed over the whole canvas (the mask trims it)."""
    fill = Image.new("RGBA", (canvas, canvas), ink.base + (255,))
    if pattern == "solid":
        return fill
    print_colour = _blend(ink.base, (0, 0, 0), 0.5) if _luminance(ink.base) > 0.7 \
        else _blend(ink.base, (255, 255, 255), 0.65)
    draw = ImageDraw.Draw(fill)
    period = canvas * float(rng.uniform(0.12, 0.2))
    phase = float(rng.uniform(0, period))
    steps = int(canvas / period) + 2
    if pattern == "stripes":
        for k in range(-1, steps):
            y = phase + k * period
            draw.rectangle([0, y, canvas, y + period / 3], fill=print_colour)
    elif pattern == "dots":
        radius = period * 0.2
        for row in range(-1, steps):
            for col in range(-1, steps):
                x = phase + col * period + (period / 2 if row % 2 else 0)
                y = phase + row * period
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=print_colour)
    elif pattern == "checks":
        band = period / 5
        for k in range(-1, steps):
            offset = phase + k * period
            draw.rectangle([offset, 0, offset + band, canvas], fill=print_colour)
            draw.rectangle([0, offset, canvas, offset + band], fill=print_colour)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    return fill


def render_product_image(item: SyntheticItem, image_size: int = 64, seed: int = 0) -> Image.Image:
    """Draws one product photo; the pose and background jitter come from (seed, item.index)."""
    _check_image_size(image_size)
    _check_seed(seed)
    rng = np.random.default_rng([seed, 1, item.index])
    canvas = image_size * _SUPERSAMPLE
    base = COLOURS[item.base_colour]
    ink = _Inks(base=base, shade=_shade(base), accent=_accent(base))
    pen = _Pen(canvas, scale=float(rng.uniform(0.78, 0.98)), aspect=float(rng.uniform(0.9, 1.1)),
               shift=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.06, 0.06))),
               mirrored=bool(rng.random() < 0.5))
    angle = float(rng.uniform(-12, 12))
    grey = int(rng.integers(200, 227))
    background = tuple(int(np.clip(grey + rng.integers(-4, 5), 0, 255)) for _ in range(3))

    mask = Image.new("L", (canvas, canvas), 0)
    trim = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    SHAPES[item.article_type](pen, ImageDraw.Draw(mask), ImageDraw.Draw(trim), ink)
    # Patterned fill inside the silhouette, a thin shaded outline along its edge, trim on top.
    # (putalpha + alpha_composite: several times cheaper than masked pastes at this size.)
    if item.pattern == "solid":
        product = Image.new("RGBA", (canvas, canvas), ink.base + (255,))
    else:
        product = _pattern_fill(canvas, item.pattern, ink, rng)
    product.putalpha(mask)
    eroded = mask.filter(ImageFilter.BoxBlur(2)).point(_FULLY_INSIDE)  # 2 px erosion, cheaply
    outline = Image.new("RGBA", (canvas, canvas), ink.shade + (255,))
    outline.putalpha(ImageChops.subtract(mask, eroded))
    product = Image.alpha_composite(Image.alpha_composite(product, outline), trim)

    # Nearest-neighbour rotation is far cheaper than bicubic (0.2 vs 9 ms at 3x); the
    # supersampled canvas and the box-filter reduce below smooth its jagged edges anyway.
    product = product.rotate(angle, resample=Image.Resampling.NEAREST, center=(canvas / 2, canvas / 2))
    photo = Image.alpha_composite(Image.new("RGBA", (canvas, canvas), background + (255,)), product)
    photo = photo.convert("RGB")
    return photo.reduce(_SUPERSAMPLE)


def encode_jpeg(image: Image.Image) -> bytes:
    """Full-resolution chroma (no 4:2:0) so thin stripes keep their colour at 64 px."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


# --------------------------------------------------------------------------- catalog


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _check_image_size(image_size) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 16 <= image_size <= 1024:
        raise ValueError(f"image_size must be an integer between 16 and 1024, got {image_size!r}")


def generate_synthetic_catalog(out_dir: str | Path, num_items: int = 2000, seed: int = 0,
                               image_size: int = 64) -> Path:
    """Writes products.csv and images/ into `out_dir` and returns it.

    Images are written before products.csv, so an interrupted run never leaves a CSV that names
    missing photos. Existing files of the same names are overwritten; nothing else is touched.
    """
    _check_positive_int("num_items", num_items)
    _check_seed(seed)
    _check_image_size(image_size)
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    items = plan_synthetic_items(num_items, seed)
    for item in items:
        if item.has_image:
            (out_dir / item.image).write_bytes(encode_jpeg(render_product_image(item, image_size, seed)))
    with (out_dir / "products.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)  # \r\n line ends, like the real catalog export
        writer.writerow(CSV_COLUMNS)
        writer.writerows(item.csv_row() for item in items)
    return out_dir
