"""The services of the ensemble, in one table: each member's extractor, learner, port and compose address.

Adding a member is one `MemberSpec` here (or `register_member` at run time), plus its learner builder if new; then
`python -m shared deploy render` writes its services/<name>/, Dockerfile target, compose, Swarm and k8s entries from
this table. Kept free of heavy imports: the images' healthcheck reads the service's port through it (the settings'
defaults) every few seconds.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServiceSpec:
    """A service of the ensemble: its name, local port, fixed address on the compose network and app factory."""

    name: str
    port: int
    compose_host: str
    # `module:function` taking a config mapping and returning the WSGI app (imported only in that service).
    factory: str = "shared.serving.app:create_app"

    def create_app(self, config: dict[str, Any] | None = None) -> Any:
        """This service's WSGI app, built by its factory with SERVICE_NAME set."""
        module, _, function = self.factory.partition(":")
        return getattr(importlib.import_module(module), function)({"SERVICE_NAME": self.name, **(config or {})})


@dataclass(frozen=True)
class MemberSpec(ServiceSpec):
    """A base learner: which registered feature extractor feeds which learner (a `module:function` builder)."""

    extractor: str = ""
    learner: str = ""
    # What it computes, in one line: the comment on its Dockerfile target and k8s manifest.
    summary: str = ""
    # The member that scales out (the slowest): 2 Swarm tasks by default, a k8s autoscaler on CPU instead of 1 pod.
    scales_out: bool = False

    def build_learner(self, seed: int = 0) -> Any:
        """A fresh, unfitted sklearn Pipeline with predict_proba."""
        module, _, function = self.learner.partition(":")
        return getattr(importlib.import_module(module), function)(seed)


_MEMBERS: dict[str, MemberSpec] = {}
GATEWAY = "stacking"
GATEWAY_SPEC = ServiceSpec(GATEWAY, 5003, "172.16.238.13", factory="shared.gateway.app:create_app")


def register_member(spec: MemberSpec) -> MemberSpec:
    """Add a member to the table (the built-in ones are registered below)."""
    if spec.name == GATEWAY or spec.name in _MEMBERS:
        raise ValueError(f"A service named {spec.name!r} is already registered")
    _MEMBERS[spec.name] = spec
    return spec


def unregister_member(name: str) -> None:
    """Remove a member added at run time (tests)."""
    _MEMBERS.pop(name, None)


def member_names() -> tuple[str, ...]:
    """The members' names, in table order."""
    return tuple(_MEMBERS)


def member(name: str) -> MemberSpec:
    """The named member's spec; an unknown name is an error naming the known ones."""
    if name not in _MEMBERS:
        raise ValueError(f"Unknown member {name!r}; expected one of {', '.join(_MEMBERS)}")
    return _MEMBERS[name]


def services() -> tuple[ServiceSpec, ...]:
    """Every service: the members, then the gateway."""
    return (*_MEMBERS.values(), GATEWAY_SPEC)


def service(name: str) -> ServiceSpec:
    """The named service's spec (a member or the gateway)."""
    return GATEWAY_SPEC if name == GATEWAY else member(name)


register_member(MemberSpec("ocr_nb", 5000, "172.16.238.10", extractor="ocr",
                           learner="shared.learning.learners:naive_bayes_on_text",
                           summary="EasyOCR text -> char n-grams -> Naive Bayes", scales_out=True))
register_member(MemberSpec("clip_svm", 5001, "172.16.238.11", extractor="clip",
                           learner="shared.learning.learners:svm_on_embeddings",
                           summary="open_clip CLIP image embedding -> SVC"))
register_member(MemberSpec("clip_logreg", 5002, "172.16.238.12", extractor="clip",
                           learner="shared.learning.learners:logreg_on_embeddings",
                           summary="CLIP image embedding -> LogisticRegression"))
