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

``--max-path-depth N`` caps every destination at N path segments, prefix
included, for registries that limit depth (Quay ``org/repo``: 2; GitLab: the
project path plus 3): the first N-1 segments stay, the excess is joined with
``-`` (``kse/nvidia/cloud-native/validator`` at 2 -> ``kse/nvidia-cloud-native-validator``).
The plan records the depth and the names, so every later step uses the same ones.
"""

from __future__ import annotations

from collections.abc import Iterable

from mirrorkit.errors import InputError, MappingCollisionError
from mirrorkit.refs import Ref, RegistryTarget

STRATEGIES = ("prefix", "keep-host", "flatten")


def limit_depth(repository: str, max_depth: int | None, prefix: str = "") -> str:
    """``repository`` cut to ``max_depth`` segments, the excess joined with ``-``."""
    if not max_depth:
        return repository
    parts = repository.split("/")
    if len(parts) <= max_depth:
        return repository
    prefix_depth = len(prefix.split("/")) if prefix else 0
    if max_depth <= prefix_depth:
        raise InputError(f"--max-path-depth {max_depth}: the registry prefix {prefix!r} alone has {prefix_depth} "
                         "path segment(s), leaving none for the image name; use a shorter prefix")
    keep = max_depth - 1
    return "/".join(parts[:keep] + ["-".join(parts[keep:])])


def destination_repository(source: Ref, target: RegistryTarget, strategy: str,
                           max_depth: int | None = None) -> str:
    if strategy == "prefix":
        path = source.repository
    elif strategy == "keep-host":
        path = f"{source.registry}/{source.repository}"
    elif strategy == "flatten":
        path = source.repository.replace("/", "-")
    else:
        raise InputError(f"unknown mapping {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    return limit_depth(target.join(path), max_depth, target.prefix)


def map_ref(source: Ref, target: RegistryTarget, strategy: str, tag: str | None = None,
            max_depth: int | None = None) -> Ref:
    """The destination of one source; ``tag`` overrides the source tag (OS aliases)."""
    dest = Ref(target.host, destination_repository(source, target, strategy, max_depth),
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


def check_depth_collisions(pairs: Iterable[tuple[Ref, Ref]], max_depth: int | None) -> None:
    """Under --max-path-depth, two different source repositories must not share one destination repository.

    Joining with ``-`` can fold ``a/b-c`` and ``a-b/c`` into one name; their tags would
    then mix in one repository, and one image could silently replace the other.
    """
    if not max_depth:
        return
    seen: dict[str, Ref] = {}
    for source, dest in pairs:
        other = seen.setdefault(dest.name, source)
        if other.name != source.name:
            raise MappingCollisionError(
                f"--max-path-depth {max_depth}: {other.name} and {source.name} would both become {dest.name}; "
                "raise --max-path-depth, or use --mapping keep-host or another --registry prefix"
            )
