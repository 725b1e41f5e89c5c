"""``python -m pipeline`` subcommands for analyses."""
