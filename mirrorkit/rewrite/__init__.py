"""Configuration that makes a cluster pull from the mirror."""
