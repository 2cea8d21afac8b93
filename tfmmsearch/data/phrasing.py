"""How shoppers write attribute queries: synonym lists and word-order templates.

Real queries say "navy tee for men" where the catalog says Tshirts / Men / Navy Blue, so the
training queries must vary vocabulary, word order and number, or a model learns one template
instead of the meaning. Templates carry stable integer ids (append new ones at the end) so a
caller can hold whole phrasings out of training and measure generalisation to unseen wording.

Vocabulary is looked up by a normalised key (lower case, letters and digits only), so the
catalog spellings "T-shirts", "Tshirts" and "T-Shirts" share one entry. Values without an entry
fall back to their lower-cased name, with singular/plural forms derived for article types.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

ROLES = ("article_type", "gender", "base_colour", "usage")
EXTRA_ROLES = ROLES[1:]

# Template slot name -> the attribute role it renders.
SLOT_ROLES = {"type": "article_type", "gender": "gender", "colour": "base_colour", "usage": "usage"}
SLOT_FORMS = {
    "type": ("sg", "pl"),
    "gender": ("pre", "suf", "bare"),
    "colour": ("adj", "in", "named"),
    "usage": ("pre", "suf", "bare"),
}


def normalise_key(value: str) -> str:
    """Lower case, letters and digits only: the lookup key for every vocabulary table."""
    return re.sub(r"[^0-9a-z]", "", value.lower())


# --------------------------------------------------------------------------- article types

# (singular, plural) pairs. Garments named only in the plural ("jeans") repeat the plural.
_TYPE_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "Tshirts": (("t-shirt", "t-shirts"), ("tee", "tees"), ("t shirt", "t shirts"),
                ("tshirt", "tshirts")),
    "Shirts": (("shirt", "shirts"), ("button-down shirt", "button-down shirts"),
               ("collared shirt", "collared shirts")),
    "Casual Shoes": (("casual shoe", "casual shoes"), ("sneaker", "sneakers"),
                     ("sneakers", "sneakers")),
    "Sports Shoes": (("sports shoe", "sports shoes"), ("running shoe", "running shoes"),
                     ("trainers", "trainers"), ("athletic shoe", "athletic shoes")),
    "Formal Shoes": (("formal shoe", "formal shoes"), ("dress shoe", "dress shoes"),
                     ("office shoes", "office shoes")),
    "Watches": (("watch", "watches"), ("wrist watch", "wrist watches"),
                ("wristwatch", "wristwatches")),
    "Kurtas": (("kurta", "kurtas"),),
    "Kurtis": (("kurti", "kurtis"),),
    "Kurta Sets": (("kurta set", "kurta sets"),),
    "Tops": (("top", "tops"), ("blouse", "blouses")),
    "Handbags": (("handbag", "handbags"), ("hand bag", "hand bags"), ("purse", "purses"),
                 ("shoulder bag", "shoulder bags")),
    "Heels": (("heels", "heels"), ("high heels", "high heels"), ("heeled sandals", "heeled sandals")),
    "Sunglasses": (("sunglasses", "sunglasses"), ("shades", "shades"),
                   ("sun glasses", "sun glasses")),
    "Flip Flops": (("flip flops", "flip flops"), ("flip-flops", "flip-flops"),
                   ("slippers", "slippers")),
    "Sandals": (("sandal", "sandals"), ("sandals", "sandals")),
    "Sports Sandals": (("sports sandal", "sports sandals"), ("floaters", "floaters")),
    "Wallets": (("wallet", "wallets"),),
    "Briefs": (("briefs", "briefs"), ("underwear briefs", "underwear briefs")),
    "Trunk": (("trunks", "trunks"), ("underwear trunks", "underwear trunks")),
    "Boxers": (("boxers", "boxers"), ("boxer shorts", "boxer shorts")),
    "Belts": (("belt", "belts"),),
    "Backpacks": (("backpack", "backpacks"), ("rucksack", "rucksacks"), ("back pack", "back packs")),
    "Rucksacks": (("rucksack", "rucksacks"), ("backpack", "backpacks")),
    "Perfume and Body Mist": (("perfume", "perfumes"), ("body mist", "body mists"),
                              ("fragrance", "fragrances")),
    "Deodorant": (("deodorant", "deodorants"), ("deo", "deos"), ("body spray", "body sprays")),
    "Socks": (("socks", "socks"), ("pair of socks", "socks")),
    "Jeans": (("jeans", "jeans"), ("denims", "denims"), ("denim jeans", "denim jeans")),
    "Trousers": (("trousers", "trousers"), ("pants", "pants"), ("slacks", "slacks")),
    "Track Pants": (("track pants", "track pants"), ("joggers", "joggers"),
                    ("trackpants", "trackpants")),
    "Lounge Pants": (("lounge pants", "lounge pants"), ("pyjama pants", "pyjama pants")),
    "Shorts": (("shorts", "shorts"), ("half pants", "half pants")),
    "Capris": (("capris", "capris"), ("capri pants", "capri pants"), ("3/4 pants", "3/4 pants")),
    "Leggings": (("leggings", "leggings"),),
    "Dresses": (("dress", "dresses"), ("frock", "frocks")),
    "Sarees": (("saree", "sarees"), ("sari", "saris")),
    "Flats": (("flats", "flats"), ("flat shoes", "flat shoes"), ("ballerinas", "ballerinas")),
    "Earrings": (("earrings", "earrings"), ("ear rings", "ear rings")),
    "Bra": (("bra", "bras"), ("brassiere", "brassieres")),
    "Nail Polish": (("nail polish", "nail polishes"), ("nail paint", "nail paints")),
    "Lipstick": (("lipstick", "lipsticks"), ("lip colour", "lip colours")),
    "Sweatshirts": (("sweatshirt", "sweatshirts"), ("sweat shirt", "sweat shirts")),
    "Sweaters": (("sweater", "sweaters"), ("pullover", "pullovers"), ("jumper", "jumpers")),
    "Jackets": (("jacket", "jackets"),),
    "Clutches": (("clutch", "clutches"), ("clutch bag", "clutch bags"),
                 ("evening bag", "evening bags")),
    "Caps": (("cap", "caps"), ("baseball cap", "baseball caps"), ("hat", "hats")),
    "Innerwear Vests": (("vest", "vests"), ("undershirt", "undershirts"),
                        ("innerwear vest", "innerwear vests")),
    "Ties": (("tie", "ties"), ("necktie", "neckties")),
    "Tunics": (("tunic", "tunics"),),
    "Pendant": (("pendant", "pendants"),),
    "Necklace and Chains": (("necklace", "necklaces"), ("chain", "chains")),
    "Nightdress": (("nightdress", "nightdresses"), ("nightgown", "nightgowns"),
                   ("nighty", "nighties")),
    "Night suits": (("night suit", "night suits"), ("pyjama set", "pyjama sets")),
    "Skirts": (("skirt", "skirts"),),
    "Ring": (("ring", "rings"),),
    "Scarves": (("scarf", "scarves"),),
    "Stoles": (("stole", "stoles"), ("wrap", "wraps")),
    "Dupatta": (("dupatta", "dupattas"), ("chunni", "chunnis")),
    "Bangle": (("bangle", "bangles"),),
    "Bracelet": (("bracelet", "bracelets"),),
    "Laptop Bag": (("laptop bag", "laptop bags"),),
    "Duffel Bag": (("duffel bag", "duffel bags"), ("gym bag", "gym bags"),
                   ("travel bag", "travel bags")),
    "Messenger Bag": (("messenger bag", "messenger bags"), ("sling bag", "sling bags")),
    "Cufflinks": (("cufflinks", "cufflinks"), ("cuff links", "cuff links")),
    "Jewellery Set": (("jewellery set", "jewellery sets"), ("jewelry set", "jewelry sets")),
    "Accessory Gift Set": (("accessory gift set", "accessory gift sets"), ("gift set", "gift sets")),
    "Fragrance Gift Set": (("fragrance gift set", "fragrance gift sets"),
                           ("perfume gift set", "perfume gift sets")),
    "Kajal and Eyeliner": (("kajal", "kajals"), ("eyeliner", "eyeliners")),
    "Lip Gloss": (("lip gloss", "lip glosses"),),
    "Foundation and Primer": (("foundation", "foundations"), ("primer", "primers")),
    "Face Moisturisers": (("face moisturiser", "face moisturisers"),
                          ("moisturizer", "moisturizers")),
    "Mufflers": (("muffler", "mufflers"),),
    "Swimwear": (("swimwear", "swimwear"), ("swimsuit", "swimsuits")),
}
TYPE_NOUNS = {normalise_key(name): nouns for name, nouns in _TYPE_NOUNS.items()}

# Words that have no singular in shopping language, and mass nouns with no plural.
_PLURAL_ONLY = {"pants", "jeans", "trousers", "shorts", "leggings", "jeggings", "capris", "tights",
                "briefs", "boxers", "stockings", "sunglasses", "glasses", "heels", "flats", "trunks",
                "pyjamas", "pajamas", "earrings", "cufflinks", "flops", "joggers"}
_MASS_NOUNS = {"care", "wear", "swimwear", "innerwear", "sleepwear", "nightwear", "footwear",
               "eyewear", "jewellery", "jewelry", "makeup", "clothing", "luggage"}


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    return word[:-1]


def _plural(word: str) -> str:
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def fallback_type_nouns(article_type: str) -> tuple[str, str]:
    """(singular, plural) of a type with no synonym entry, from its lower-cased name."""
    phrase = " ".join(article_type.lower().split())
    if not phrase:
        raise ValueError("article_type is empty")
    words = phrase.split(" ")
    last = words[-1]
    if " and " in f" {phrase} " or last in _PLURAL_ONLY or last in _MASS_NOUNS:
        return phrase, phrase
    head = " ".join(words[:-1] + [""])
    if last.endswith("s") and not last.endswith(("ss", "us", "is")) and len(last) > 2:
        return head + _singular(last), phrase
    return phrase, head + _plural(last)


def type_nouns(article_type: str) -> tuple[tuple[str, str], ...]:
    """All (singular, plural) ways to name `article_type`; never empty."""
    return TYPE_NOUNS.get(normalise_key(article_type)) or (fallback_type_nouns(article_type),)


# --------------------------------------------------------------------------- gender, colour, usage

# Forms: "pre" goes before the noun, "suf" after it, "bare" is the keyword-style word.
_GENDER_FORMS = {
    "Men": {"pre": ("men's", "mens", "men"), "suf": ("for men", "for him", "for guys"),
            "bare": ("men", "mens", "male")},
    "Women": {"pre": ("women's", "womens", "ladies", "women"),
              "suf": ("for women", "for her", "for ladies"), "bare": ("women", "womens", "ladies")},
    "Unisex": {"pre": ("unisex",), "suf": ("for men and women", "for both men and women"),
               "bare": ("unisex",)},
    "Boys": {"pre": ("boys'", "boys", "boy's"), "suf": ("for boys", "for a boy"),
             "bare": ("boys", "boy")},
    "Girls": {"pre": ("girls'", "girls", "girl's"), "suf": ("for girls", "for a girl"),
              "bare": ("girls", "girl")},
}
GENDER_FORMS = {normalise_key(name): forms for name, forms in _GENDER_FORMS.items()}

_COLOUR_WORDS = {
    "Navy Blue": ("navy", "navy blue"),
    "Grey": ("grey", "gray"),
    "Grey Melange": ("grey melange", "heather grey", "melange grey"),
    "Charcoal": ("charcoal", "charcoal grey"),
    "Multi": ("multicolour", "multicoloured", "multi-colour", "multicolor"),
    "Off White": ("off white", "off-white"),
    "Gold": ("gold", "golden"),
    "Steel": ("steel", "steel grey"),
    "Skin": ("skin", "skin tone"),
    "Turquoise Blue": ("turquoise", "turquoise blue"),
    "Coffee Brown": ("coffee brown", "coffee"),
    "Fluorescent Green": ("fluorescent green", "neon green"),
    "Lime Green": ("lime green", "lime"),
    "Burgundy": ("burgundy", "wine"),
    "Maroon": ("maroon", "dark red"),
    "Cream": ("cream", "cream colored"),
}
COLOUR_WORDS = {normalise_key(name): words for name, words in _COLOUR_WORDS.items()}

_USAGE_FORMS = {
    "Casual": {"pre": ("casual", "everyday"),
               "suf": ("for casual wear", "for everyday wear", "for daily wear"),
               "bare": ("casual",)},
    "Sports": {"pre": ("sporty", "athletic", "sports"),
               "suf": ("for sports wear", "for sports", "for the gym", "for workouts"),
               "bare": ("sports", "sport")},
    "Formal": {"pre": ("formal", "office"),
               "suf": ("for office", "for work", "for formal wear", "for the office"),
               "bare": ("formal", "office wear")},
    "Ethnic": {"pre": ("ethnic", "traditional"),
               "suf": ("for ethnic wear", "for festive wear", "for traditional wear"),
               "bare": ("ethnic", "traditional")},
    "Smart Casual": {"pre": ("smart casual", "smart-casual"), "suf": ("for smart casual wear",),
                     "bare": ("smart casual",)},
    "Party": {"pre": ("party", "partywear"), "suf": ("for parties", "for a party", "for party wear"),
              "bare": ("party", "party wear")},
    "Travel": {"pre": ("travel",), "suf": ("for travel", "for travelling"), "bare": ("travel",)},
}
USAGE_FORMS = {normalise_key(name): forms for name, forms in _USAGE_FORMS.items()}


def _plain(value: str) -> str:
    text = " ".join(value.lower().split())
    if not text:
        raise ValueError("attribute value is empty")
    return text


def gender_phrases(value: str, form: str) -> tuple[str, ...]:
    forms = GENDER_FORMS.get(normalise_key(value))
    if forms is not None:
        return forms[form]
    word = _plain(value)
    return {"pre": (word,), "suf": (f"for {word}",), "bare": (word,)}[form]


def colour_phrases(value: str, form: str) -> tuple[str, ...]:
    words = COLOUR_WORDS.get(normalise_key(value)) or (_plain(value),)
    if form == "adj":
        return words
    if form == "in":
        return tuple(f"in {word}" for word in words)
    # "named": "navy colour"; a word that already says colour stands alone.
    return tuple(word if "colo" in word else f"{word} {suffix}"
                 for word in words for suffix in ("colour", "color"))


def usage_phrases(value: str, form: str) -> tuple[str, ...]:
    forms = USAGE_FORMS.get(normalise_key(value))
    if forms is not None:
        return forms[form]
    word = _plain(value)
    return {"pre": (word,), "suf": (f"for {word} wear",), "bare": (word,)}[form]


def type_phrases(value: str, form: str) -> tuple[str, ...]:
    index = 0 if form == "sg" else 1
    return tuple(dict.fromkeys(pair[index] for pair in type_nouns(value)))


_PHRASES = {"type": type_phrases, "gender": gender_phrases, "colour": colour_phrases,
            "usage": usage_phrases}


# --------------------------------------------------------------------------- templates

@dataclass(frozen=True)
class Template:
    """A word order: slots like `{gender:pre}` that vanish when the query omits that attribute."""

    template_id: int
    pattern: str
    slots: tuple[tuple[str, str], ...]  # (slot, form) in order

    @classmethod
    def parse(cls, template_id: int, pattern: str) -> "Template":
        slots = tuple(re.findall(r"\{(\w+):(\w+)\}", pattern))
        if re.sub(r"\{\w+:\w+\}|\s", "", pattern):
            raise ValueError(f"template {template_id} {pattern!r}: only {{slot:form}} items allowed")
        names = [slot for slot, _ in slots]
        if sorted(names) != sorted(SLOT_FORMS):
            raise ValueError(f"template {template_id} {pattern!r}: needs each of "
                             f"{', '.join(SLOT_FORMS)} exactly once")
        for slot, form in slots:
            if form not in SLOT_FORMS[slot]:
                raise ValueError(f"template {template_id} {pattern!r}: {slot} has no form {form!r}")
        return cls(template_id, pattern, slots)

    def render(self, attributes: dict[str, str], rng: random.Random) -> str:
        """Fills the slots for the roles in `attributes`, one random synonym per slot."""
        pieces = []
        for slot, form in self.slots:
            value = attributes.get(SLOT_ROLES[slot])
            if value is not None:
                pieces.append(rng.choice(_PHRASES[slot](value, form)))
        return _drop_repeated_words(" ".join(pieces))


def _drop_repeated_words(text: str) -> str:
    """"casual casual shoes" -> "casual shoes" (usage word meeting a type that contains it)."""
    kept: list[str] = []
    for word in text.split():
        if kept and normalise_key(kept[-1]) == normalise_key(word):
            continue
        kept.append(word)
    return " ".join(kept)


# Append only: a template's id is its position, and held-out phrasings are chosen by id.
TEMPLATE_PATTERNS = (
    "{gender:pre} {colour:adj} {usage:pre} {type:pl}",      # mens navy casual tees
    "{colour:adj} {usage:pre} {type:pl} {gender:suf}",      # navy casual tees for men
    "{gender:pre} {usage:pre} {type:pl} {colour:in}",       # men's casual t-shirts in navy
    "{type:pl} {gender:bare} {colour:adj} {usage:bare}",    # t-shirts men navy casual
    "{gender:pre} {colour:adj} {type:sg} {usage:suf}",      # men's navy tee for casual wear
    "{usage:pre} {colour:adj} {type:sg} {gender:suf}",      # casual navy tee for him
    "{colour:adj} {gender:pre} {type:pl} {usage:suf}",      # navy men's tees for everyday wear
    "{usage:pre} {type:pl} {gender:suf} {colour:in}",       # casual tees for men in navy
    "{colour:named} {usage:pre} {type:sg} {gender:suf}",    # navy colour casual tee for men
    "{gender:bare} {type:pl} {colour:adj} {usage:bare}",    # men tees navy casual
    "{type:sg} {colour:adj} {gender:bare} {usage:bare}",    # tee navy men casual
    "{gender:pre} {usage:pre} {colour:adj} {type:sg}",      # men's casual navy tee
    "{colour:adj} {type:pl} {usage:suf} {gender:suf}",      # navy tees for daily wear for men
    "{usage:pre} {gender:pre} {type:pl} {colour:in}",       # casual men's tees in navy
    "{type:pl} {gender:suf} {colour:in} {usage:suf}",       # tees for men in navy for casual wear
    "{type:pl} {gender:suf} {colour:adj} {usage:bare}",     # tees for men navy casual
    "{usage:pre} {gender:pre} {type:sg} {colour:named}",    # casual men's tee navy colour
    "{colour:adj} {usage:bare} {type:sg} {gender:bare}",    # navy casual tee men
    "{gender:pre} {type:sg} {colour:in} {usage:suf}",       # men's tee in navy for casual wear
    "{usage:bare} {type:pl} {colour:named} {gender:suf}",   # casual tees navy color for her
)
TEMPLATES = tuple(Template.parse(index, pattern) for index, pattern in enumerate(TEMPLATE_PATTERNS))


def _hash_unit(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def heldout_template_ids(seed: int = 0, fraction: float = 0.2) -> frozenset[int]:
    """The templates reserved for evaluation: round(fraction * #templates), at least one, chosen by seed."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {fraction!r}")
    if fraction == 0.0:
        return frozenset()
    count = min(len(TEMPLATES) - 1, max(1, round(fraction * len(TEMPLATES))))
    ranked = sorted(TEMPLATES, key=lambda t: _hash_unit("heldout-template", seed, t.template_id))
    return frozenset(t.template_id for t in ranked[:count])


def template_ids_for(phrasing_split: str | None, seed: int = 0,
                     heldout_fraction: float = 0.2) -> tuple[int, ...]:
    """Template ids allowed for `phrasing_split`: None (all), "train" or "heldout"."""
    heldout = heldout_template_ids(seed, heldout_fraction)
    if phrasing_split is None:
        return tuple(t.template_id for t in TEMPLATES)
    if phrasing_split == "train":
        return tuple(t.template_id for t in TEMPLATES if t.template_id not in heldout)
    if phrasing_split == "heldout":
        if not heldout:
            raise ValueError("phrasing_split='heldout' needs heldout_fraction > 0")
        return tuple(sorted(heldout))
    raise ValueError(f"phrasing_split must be None, 'train' or 'heldout', got {phrasing_split!r}")
