"""``python -m pipeline`` subcommands of the adapter library."""
