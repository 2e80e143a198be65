"""Driver packages: what a node that compiles the NVIDIA driver at run time installs, carried across the gap.

The driver container installs the running kernel's headers (and friends) from a package repository
when it starts. Behind an air gap there is none, so mirrorkit carries exactly the closure each node
needs, with the distribution's own signed metadata, and the far side serves it as a partial mirror
that the image's own apt or dnf verifies with keys it already trusts.

Layout: ``model`` (the types every part shares), ``needs`` (what each node's driver container
installs), ``openpgp`` (signature checks with gpgv), ``apt/`` and ``rpm/`` (one family each:
repository files, signed metadata, the closure against the image's own package database),
``carry`` (one pass over every source), ``mirror`` (the far side's partial mirror).
"""
