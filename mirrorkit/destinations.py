"""Where each image of a plan or lock goes: the recorded destination, or one computed now.

push-bundle, verify and mirror accept ``--registry``/``--mapping`` given on the
air-gapped side (a registry name the connected side never knew); the OS-alias
tag the resolver chose is kept either way.
"""

from __future__ import annotations

from mirrorkit.errors import InputError
from mirrorkit.mapping import check_collisions, check_depth_collisions, map_ref
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref, RegistryTarget


def destination_map(plan: Plan, sources: list[tuple[str, str | None]], registry: RegistryTarget | None,
                    mapping: str | None) -> dict[str, Ref]:
    """source -> destination Ref for ``(source, recorded destination)`` pairs."""
    target_tags = {i.source: i.target_tag for i in plan.images}
    out: dict[str, Ref] = {}
    for source, recorded in sources:
        src = Ref.parse(source)
        if registry is not None:
            out[source] = map_ref(src, registry, mapping or plan.mapping or "prefix", target_tags.get(source),
                                  plan.max_path_depth)
        elif recorded:
            out[source] = Ref.parse(recorded)
        else:
            raise InputError(f"{source} has no destination in the plan: give --registry HOST[:PORT][/PREFIX]")
    check_collisions((Ref.parse(s), d) for s, d in out.items())
    check_depth_collisions(((Ref.parse(s), d) for s, d in out.items()), plan.max_path_depth)
    return out
