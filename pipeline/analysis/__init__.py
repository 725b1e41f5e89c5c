"""Analyses that explain what adaptation does to a backbone (effective receptive fields)."""
