"""Where each source image lands in the private registry.

Three strategies, because private registries differ in what paths they allow:

- ``prefix`` (default): drop the upstream host, keep its path under the target
  prefix: ``nvcr.io/nvidia/gpu-operator`` -> ``REG/PREFIX/nvidia/gpu-operator``.
  This is the layout the KubeSphere guide uses.
- ``keep-host``: keep the upstream host as the first path component:
  ``REG/PREFIX/nvcr.io/nvidia/gpu-operator``. Sources from different upstreams
  can never collide, and containerd ``hosts.toml`` mirrors map one to one.
- ``flatten``: one path level under the prefix, for registries that allow only
  ``project/repo`` (Quay organisations, some Nexus set-ups): path components
  joined with ``-``: ``REG/PREFIX/nvidia-gpu-operator``.

Mapping is by name only; tags and digests carry over unchanged, except where
the resolver asks for a different destination tag (an OS alias).
"""

from __future__ import annotations

from collections.abc import Iterable

from mirrorkit.errors import InputError, MappingCollisionError
from mirrorkit.refs import Ref, RegistryTarget

STRATEGIES = ("prefix", "keep-host", "flatten")


def destination_repository(source: Ref, target: RegistryTarget, strategy: str) -> str:
    if strategy == "prefix":
        path = source.repository
    elif strategy == "keep-host":
        path = f"{source.registry}/{source.repository}"
    elif strategy == "flatten":
        path = source.repository.replace("/", "-")
    else:
        raise InputError(f"unknown mapping {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    return target.join(path)


def map_ref(source: Ref, target: RegistryTarget, strategy: str, tag: str | None = None) -> Ref:
    """The destination of one source; ``tag`` overrides the source tag (OS aliases)."""
    dest = Ref(target.host, destination_repository(source, target, strategy),
               tag if tag is not None else source.tag, None)
    if dest.tag is None:
        # a digest-only source still needs a name a runtime can pull; keep it digest-addressed
        dest = Ref(dest.registry, dest.repository, None, source.digest)
    return dest


def check_collisions(pairs: Iterable[tuple[Ref, Ref]]) -> None:
    """Two different sources must never be written to one destination."""
    seen: dict[str, Ref] = {}
    for source, dest in pairs:
        key = f"{dest.name}:{dest.tag}" if dest.tag else f"{dest.name}@{dest.digest}"
        other = seen.get(key)
        if other is not None and other != source:
            raise MappingCollisionError(
                f"{other} and {source} would both be mirrored to {key}; "
                "use --mapping keep-host, or drop one of them"
            )
        seen[key] = source
