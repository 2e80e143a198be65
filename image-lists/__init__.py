"""The image lists of every GPU Operator release mirrorkit knows, as data (helm/, kubesphere/).

This folder lives at the top of the repository, where the people who maintain the
release data find it; setup.py maps it onto the package ``mirrorkit.image_lists`` so
that the wheel carries it. See mirrorkit.resolve.catalog for how the files are read.
"""
