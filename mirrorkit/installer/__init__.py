"""mirrorkit carried across the air gap by itself: its wheel, its dependencies' wheels and an install.sh.

``build`` makes the folder (``mirrorkit offline-installer -o DIR``), ``script`` is the
``install.sh`` inside it, and ``carry`` packs the folder into one blob a bundle holds
(``pull-bundle --with-installer``), listed in the lock, that ``tar`` alone can take out.
"""
