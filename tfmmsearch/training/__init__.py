"""Training: distribution strategy, example assembly, feature caching, callbacks, the train entrypoint."""
