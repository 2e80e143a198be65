"""Bundles on disk: tar volumes written and read back without trusting them."""
