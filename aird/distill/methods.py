"""Each distillation method is a recipe of weighted loss terms; a YAML config may override any weight.

``c`` (classification), ``a``/``b`` (instance level), ``r`` (relation level) are the weights of
L = c * L_cls + L_IlD + r * L_RlD; the baselines swap the distillation terms, keep the same L_cls.
"""

from __future__ import annotations

import copy

from aird.errors import ConfigError

METHODS: dict[str, dict[str, dict]] = {
    "none": {"cls": {"weight": 1.0}},
    "kd": {"cls": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}},
    "feature-l2": {"cls": {"weight": 1.0}, "feature-l2": {"weight": 1.0}},
    "cosine": {"cls": {"weight": 1.0}, "cosine": {"weight": 1.0}},
    "rkd": {"cls": {"weight": 1.0}, "rkd": {"weight": 1.0}},
    "aird-ild": {"cls": {"weight": 1.0}, "ild": {"weight": 1.0, "a": 1.0, "b": 1.0}},
    "aird-rld": {"cls": {"weight": 1.0}, "rld": {"weight": 1.0, "tau": 0.05}},
    "aird": {"cls": {"weight": 1.0}, "ild": {"weight": 1.0, "a": 1.0, "b": 1.0}, "rld": {"weight": 1.0, "tau": 0.05}},
}


def method_terms(method: str, overrides: dict[str, dict] | None = None) -> dict[str, dict]:
    """The recipe of ``method`` with per-term overrides (``{"rld": {"weight": 2.0}}``) applied."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(sorted(METHODS))}")
    terms = copy.deepcopy(METHODS[method])
    for name, spec in (overrides or {}).items():
        if name not in terms:
            raise ConfigError(f"method {method!r} has no loss term {name!r}; its terms: {', '.join(terms)}")
        terms[name].update(spec)
    return terms
