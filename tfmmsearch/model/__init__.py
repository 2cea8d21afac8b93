"""The multimodal two-tower model: towers, fusion, heads, losses and the TFRS model."""
