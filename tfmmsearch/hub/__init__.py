"""TF-Hub-format modules built offline: tiny fixtures and converters of pretrained weights."""
