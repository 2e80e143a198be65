"""The resolver: from an operator release, nodes and values to the images a cluster needs."""
