"""Export for TensorFlow Serving: the servable module, versioned writes, re-indexing."""
