"""``python -m pipeline`` subcommands for experiments."""
