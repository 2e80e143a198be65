"""Moving bytes: pull-bundle, push-bundle, mirror, verify, inventory."""
