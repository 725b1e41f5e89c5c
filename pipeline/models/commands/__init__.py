"""``python -m pipeline`` subcommands that train backbones themselves."""
