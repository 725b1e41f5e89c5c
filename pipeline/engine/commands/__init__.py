"""``python -m pipeline`` commands that drive the bundles."""
