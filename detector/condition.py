"""Stop conditions of the augment-until loop: a tiny language over the evaluation metrics.

``"auc>0.8 and eer<0.2 and auc[dfl_swap]>=0.7"``: clauses ``<metric>[<generator>]<op><number>``
joined by ``and``; :func:`parse_condition` checks one against :data:`detector.metrics.METRIC_NAMES`
(and that it asks for the better direction), :func:`condition_holds` evaluates it on a
:func:`detector.metrics.compute_metrics` result, :func:`format_condition` writes it back.
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

from detector.metrics import METRIC_NAMES, lookup

OPS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}
# which way is better for each metric: a condition must ask for the good direction
HIGHER_IS_BETTER = {name: name != "eer" for name in METRIC_NAMES}

_CLAUSE = re.compile(r"^(?P<metric>[A-Za-z@.0-9_]+)(?:\[(?P<gen>[^\]\s]+)\])?(?P<op>>=|<=|>|<)(?P<value>.+)$")


def parse_condition(text: str) -> list[tuple[str, str, float]]:
    """Parse ``"auc>0.8 and eer<0.2 and auc[dfl_swap]>=0.7"`` into ``[(metric, op, value), ...]``.

    Metrics: ``auc``, ``ap``, ``tpr@fpr0.1``, ``tpr@fpr0.01`` (with ``>``/``>=``) and ``eer``
    (with ``<``/``<=``); ``metric[generator]`` reads the per-generator metrics. Clauses are joined
    by ``and``. Errors are ``ValueError`` naming the bad token.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("condition: empty; expected e.g. 'auc>0.8' or 'auc>0.8 and eer<0.2'")
    clauses = re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE)
    out = []
    for clause in clauses:
        token = clause.strip()
        m = _CLAUSE.match(token.replace(" ", ""))
        if not m:
            raise ValueError(f"condition: cannot parse {token!r} in {text!r}; expected <metric><op><number> "
                             f"with op one of > >= < <=, clauses joined by 'and'")
        metric, gen, op, value = m["metric"].lower(), m["gen"], m["op"], m["value"]
        if metric not in HIGHER_IS_BETTER:
            raise ValueError(f"condition: unknown metric {m['metric']!r} in {text!r}; known: {', '.join(METRIC_NAMES)}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"condition: {value!r} in {token!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"condition: {value!r} in {token!r} is not a finite number")
        if HIGHER_IS_BETTER[metric] != op.startswith(">"):
            want = "> or >=" if HIGHER_IS_BETTER[metric] else "< or <="
            raise ValueError(f"condition: {token!r} asks for a worse {metric}; use {want} with {metric}")
        out.append((f"{metric}[{gen}]" if gen else metric, op, number))
    return out


def _metric_value(metrics: Mapping, metric: str) -> float:
    """The value of a parsed clause's metric (``auc`` or ``auc[generator]``); NaN when absent."""
    name, _, gen = metric.partition("[")
    try:
        return lookup(metrics, name, gen.rstrip("]") or None, default=math.nan)
    except KeyError as e:  # an unknown generator
        raise ValueError(f"condition: {e.args[0]}") from None


def condition_holds(cond: Sequence[tuple[str, str, float]], metrics: Mapping) -> bool:
    """True when every clause holds; a NaN metric never holds. Unknown generator -> ValueError."""
    return all(OPS[op](_metric_value(metrics, metric), float(value)) for metric, op, value in cond)


def format_condition(cond: Sequence[tuple[str, str, float]]) -> str:
    return " and ".join(f"{m}{op}{v:g}" for m, op, v in cond)
