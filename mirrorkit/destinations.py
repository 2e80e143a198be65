"""Where each image of a plan or lock goes: the recorded destination, or one computed now.

push-bundle, verify and mirror accept ``--registry``/``--mapping`` given on the
air-gapped side (a registry name the connected side never knew); the OS-alias
tag the resolver chose is kept either way. One source can have several
destinations (Rocky 8.5 and 8.6 nodes both served by the centos8 driver, under
two tags), so the copy commands key destinations by (source, recorded destination).
"""

from __future__ import annotations

from mirrorkit.errors import InputError
from mirrorkit.lock import LockChart
from mirrorkit.mapping import check_collisions, check_depth_collisions, map_ref
from mirrorkit.plan import Plan
from mirrorkit.refs import Ref, RegistryTarget

Pair = tuple[str, str | None]
CHARTS_DIR = "charts"   # Helm charts carried in a bundle go under REG/PREFIX/charts/NAME
OPERATOR_CHART = "gpu-operator"
UPSTREAM_CHART = "nvidia/gpu-operator"


def destination_pairs(plan: Plan, pairs: list[Pair], registry: RegistryTarget | None,
                      mapping: str | None) -> dict[Pair, Ref]:
    """(source, recorded destination) -> destination Ref, one entry per pair."""
    target_tags: dict[Pair, str | None] = {(i.source, i.destination): i.target_tag for i in plan.images}
    by_source: dict[str, str | None] = {}
    for i in plan.images:
        by_source.setdefault(i.source, i.target_tag)
    out: dict[Pair, Ref] = {}
    for source, recorded in pairs:
        src = Ref.parse(source)
        if registry is not None:
            tag = target_tags.get((source, recorded), by_source.get(source))
            out[(source, recorded)] = map_ref(src, registry, mapping or plan.mapping or "prefix", tag,
                                              plan.max_path_depth)
        elif recorded:
            out[(source, recorded)] = Ref.parse(recorded)
        else:
            raise InputError(f"{source} has no destination in the plan: give --registry HOST[:PORT][/PREFIX]")
    check_collisions((Ref.parse(s), d) for (s, _), d in out.items())
    check_depth_collisions(((Ref.parse(s), d) for (s, _), d in out.items()), plan.max_path_depth)
    return out


def destination_map(plan: Plan, sources: list[Pair], registry: RegistryTarget | None,
                    mapping: str | None) -> dict[str, Ref]:
    """source -> its first destination: for config writers, which need one mirror path per source."""
    return first_by_source(destination_pairs(plan, sources, registry, mapping))


def first_by_source(pairs: dict[Pair, Ref]) -> dict[str, Ref]:
    """source -> its first destination. Signature artifacts go to a source's repository once:
    two destinations of one source share it (only their tags differ)."""
    out: dict[str, Ref] = {}
    for (source, _), ref in pairs.items():
        out.setdefault(source, ref)
    return out


def chart_repository(target: RegistryTarget, name: str) -> str:
    """``HOST/PREFIX/charts/NAME``: where a chart goes in the private registry."""
    return f"{target.host}/{target.join(f'{CHARTS_DIR}/{name}')}"


def operator_chart(charts: list[LockChart], registry: str | None, release: str | None,
                   carried: bool = False) -> tuple[str, str]:
    """Where ``helm install`` finds the GPU Operator chart, and its version.

    ``oci://HOST/PREFIX/charts/gpu-operator`` when the bundle carried the chart
    (``registry`` wins over the repository recorded at pull time, as for images),
    or when ``carried`` says the next bundle will; else the upstream chart.
    """
    target = RegistryTarget.parse(registry) if registry else None
    for chart in charts:
        if chart.name == OPERATOR_CHART:
            repository = chart_repository(target, chart.name) if target else chart.repository
            if repository:
                return f"oci://{repository}", chart.version
    if carried and target and release:
        return f"oci://{chart_repository(target, OPERATOR_CHART)}", release
    return UPSTREAM_CHART, release or ""
