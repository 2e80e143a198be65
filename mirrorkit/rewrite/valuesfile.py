"""Helm values / KubeSphere extension config for the mirror, merged into the user's own file.

The user's file may come from any editor: a Windows one saves a UTF-8 BOM and CRLF line
ends. The BOM is dropped on reading (mirrorkit.yamlio), the edit is made on LF text and
the result is written back with the file's own line ends, so a review diff shows only the
image settings. Whatever path produced it, the text is parsed once more before it is
returned: a file that would not load as exactly the merged values is never written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from mirrorkit.errors import InputError, OperationError
from mirrorkit.rewrite import helm
from mirrorkit.rewrite.comments import inert
from mirrorkit.rewrite.yamledit import edit_values, leaf_changes
from mirrorkit.yamlio import line_ending, parse_mapping, parse_yaml, read_text


@dataclass
class ValuesOutput:
    text: str
    changed: list[str]
    kept_layout: bool = True
    warnings: list[str] = field(default_factory=list)


def rewrite_values(overlay: helm.Overlay, release: str | None, fmt: str,
                   values_file: str | None = None) -> ValuesOutput:
    """The values (``fmt`` helm or kubesphere) pointing at the mirror, merged into ``values_file``."""
    duplicates: list[str] = []
    raw = read_text(values_file, "values file") if values_file else ""
    eol = line_ending(raw)
    text = raw.replace("\r\n", "\n")
    if "\r" in text:
        raise InputError(f"{values_file}: values file has carriage returns that do not end a line "
                         "(old Mac line ends?); save it with LF or CRLF line ends")
    user = parse_mapping(text, str(values_file), "values file", duplicates) if values_file else {}
    build = helm.kubesphere_config if fmt == "kubesphere" else helm.helm_values
    values, changed = build(overlay, user)
    kind = "KubeSphere extension config" if fmt == "kubesphere" else "Helm values"
    header = [f"# GPU Operator {inert(release)}: {kind} pointing at the mirror, written by mirrorkit rewrite-config."]
    body = edit_values(text, leaf_changes(user, values), values) if values_file else None
    if values_file:
        kept = "its comments and layout kept" if body is not None else "rewritten (its comments are not kept)"
        header.append(f"# Merged into {values_file}: {len(changed)} keys changed, every other setting kept, "
                      f"{kept}.")
    header += [f"# {note}" for note in overlay.notes]
    in_place = body is not None
    if body is None:
        body = yaml.safe_dump(values, sort_keys=False, width=120)
    out = ("\n".join(header) + "\n" + body).replace("\n", eol)
    if parse_yaml(out, "rewritten values") != values:
        raise OperationError(f"{values_file or 'values'}: the rewritten file would not load as the merged "
                             "values; nothing written")
    return ValuesOutput(out, changed, kept_layout=in_place, warnings=duplicates)
