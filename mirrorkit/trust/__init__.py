"""Supply chain trust: public keys, cosign signatures, and the artifacts that travel with images."""
