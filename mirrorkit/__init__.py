"""mirrorkit: carry the NVIDIA GPU Operator, and any other image set, into air-gapped clusters."""

__version__ = "0.1.0"
