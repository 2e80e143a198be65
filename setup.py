"""Only what pyproject.toml cannot say: the top-level image-lists/ folder ships as ``mirrorkit.image_lists``."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["mirrorkit*"]), "mirrorkit.image_lists"],
      package_dir={"mirrorkit.image_lists": "image-lists"},
      package_data={"mirrorkit": ["py.typed"], "mirrorkit.image_lists": ["*/*.yaml"]})
