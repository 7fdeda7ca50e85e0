"""Which parts of a weights folder are real and which synthetic, and how every output says so."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from shared.weights.store import weight_parts


def info_from_parts(parts: dict) -> dict:
    """weights.json from its sections: `synthetic` is true if any part is, `parts` says which part is which."""
    return {**parts, "synthetic": any(section["synthetic"] for section in parts.values()),
            "parts": {kind: part_kind(section) for kind, section in parts.items()}}


def part_kind(section: dict) -> str:
    """'synthetic' or 'real' for one weights.json section."""
    return "synthetic" if section.get("synthetic") else "real"


def describe_parts(info: dict) -> str:
    """'ocr real, clip SYNTHETIC': for logs and messages."""
    return ", ".join(f"{kind} {'SYNTHETIC' if info[kind].get('synthetic') else 'real'}"
                     for kind in weight_parts() if isinstance(info.get(kind), dict))


def part_owners(kinds: Iterable[str]) -> str:
    """Whose accuracy these synthetic parts lack, from the extractor registry: "EasyOCR's or CLIP's"."""
    from shared.features.registry import part_upstream

    return " or ".join(f"{part_upstream(kind)}'s" for kind in kinds)


def parts_of(configs: Mapping[str, Any]) -> dict[str, str]:
    """{kind: "real"|"synthetic"} of feature configs (a manifest's "features") or of weights.json's sections."""
    return {kind: part_kind(cfg) for kind, cfg in configs.items() if isinstance(cfg, dict) and "synthetic" in cfg}


def manifest_parts(manifest: Mapping[str, Any]) -> dict[str, str]:
    """{kind: "real"|"synthetic"} a trained manifest records (older manifests: from its feature configs)."""
    recorded = manifest.get("weights")
    return dict(recorded) if isinstance(recorded, dict) else parts_of(manifest.get("features") or {})


def combine_parts(parts: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """One {kind: "real"|"synthetic"} from several (e.g. the members behind a stacked answer); synthetic wins."""
    combined: dict[str, str] = {}
    for each in parts:
        for kind, what in each.items():
            combined[kind] = "synthetic" if "synthetic" in (what, combined.get(kind)) else what
    return combined


def synthetic_parts(parts: Mapping[str, str]) -> list[str]:
    """The kinds marked synthetic in a {kind: "real"|"synthetic"} dict."""
    return [kind for kind, what in parts.items() if what == "synthetic"]


def parts_note(parts: Mapping[str, str]) -> str:
    """'weights: ocr real, clip SYNTHETIC (random init: not CLIP's accuracy)' (real parts first); '' without parts."""
    if not parts:
        return ""
    ordered = sorted(parts.items(), key=lambda part: part[1] == "synthetic")
    listed = ", ".join(f"{kind} {'SYNTHETIC' if what == 'synthetic' else 'real'}" for kind, what in ordered)
    fake = synthetic_parts(parts)
    if not fake:
        return f"weights: {listed}"
    return f"weights: {listed} (random init: not {part_owners(fake)} accuracy)"
