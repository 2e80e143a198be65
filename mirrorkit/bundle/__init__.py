"""Bundles on disk: tar volumes written and read back without trusting them.

volumes (names, volume.yaml, .sha256), writer (layout + lock -> volumes), guard (the tar
header checks), stream (hashing streams), lockcheck (manifests against the lock), reader
(BundleReader; volumescan opens the volumes, volumepass reads and verifies them whole).
Import from the module that does the job: ``mirrorkit.bundle.reader.BundleReader``,
``mirrorkit.bundle.writer.write_bundle``.
"""
