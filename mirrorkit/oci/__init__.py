"""The OCI side: registry client, credentials, endpoints, manifests, blob layout.

Only this package touches the network.
"""
