"""emf(): CloudWatch Embedded Metric Format metrics, passed with ``extra=``.

CloudWatch Logs extracts metrics from an event that is one JSON object with
an ``_aws`` member saying which top-level members are metrics (numbers) and
which are dimensions (strings).  :func:`emf` builds those members, and
:class:`JSONFormatter` writes them at the top level of the object.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

from ._json import FIELDS, RECORD_ATTRIBUTES

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

__all__ = ["UNITS", "EMFMetric", "emf"]

#: A metric's value, or its value and its unit (one of :data:`UNITS`).
EMFMetric: TypeAlias = Union[float, tuple[float, str]]

#: The units CloudWatch knows; a metric given without one has ``"None"``.
# fmt: off
UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Percent", "Count", "None",
    "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second",
})
# fmt: on

_MAX_METRICS = 100  # per MetricDirective
_MAX_DIMENSIONS = 30  # per DimensionSet (once 9)

# Names `extra=` cannot use: logging refuses to overwrite a LogRecord
# attribute, and JSONFormatter's own fields would shadow a metric's value.
_RESERVED = RECORD_ATTRIBUTES | set(FIELDS) | {"_aws"}


def emf(
    namespace: str,
    metrics: Mapping[str, EMFMetric],
    *,
    dimensions: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Return the ``extra=`` fields that make CloudWatch record ``metrics``.

    ::

        log.info("request done", extra=emf(
            "MyService",
            {"Latency": (12.5, "Milliseconds"), "Retries": 2},
            dimensions={"Operation": "upload"},
        ))

    Each metric is a finite number, or a ``(number, unit)`` pair; the unit
    is one of :data:`UNITS`, ``"None"`` when not given.  Every metric gets
    all the ``dimensions`` (string values), and the current time.  Format
    the record with :class:`JSONFormatter`.  What the EMF specification
    refuses (too many metrics or dimensions, names too long, an unknown
    unit, a value that is not a finite number), and names logging or the
    formatter would clash with, raise ValueError or TypeError here, not at
    log time.
    """
    _check_str("namespace", namespace, 255)
    metrics = _check_mapping("metrics", metrics, 1, _MAX_METRICS)
    dimensions = _check_mapping(
        "dimensions", {} if dimensions is None else dimensions, 0, _MAX_DIMENSIONS
    )

    fields: dict[str, object] = {}
    definitions = []
    for name, metric in metrics.items():
        _check_name("metric", name, 1024)
        value, unit = _check_metric(name, metric)
        fields[name] = value
        definitions.append({"Name": name, "Unit": unit})
    for name, text in dimensions.items():
        _check_name("dimension", name, 255)
        if name in fields:
            msg = f"{name!r} is both a metric and a dimension"
            raise ValueError(msg)
        _check_str(f"the value of dimension {name!r}", text, 1024)
        fields[name] = text
    directive = {"Namespace": namespace, "Dimensions": [list(dimensions)], "Metrics": definitions}
    return {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [directive]},
        **fields,
    }


def _check_mapping(what: str, given: object, least: int, most: int) -> Mapping[str, Any]:
    if not isinstance(given, Mapping):
        msg = f"{what} must be a mapping, not {type(given).__name__}: {given!r}"
        raise TypeError(msg)
    if not least <= len(given) <= most:
        msg = f"emf() takes {least} to {most} {what}, not {len(given)}: {list(given)!r}"
        raise ValueError(msg)
    return given


def _check_str(what: str, text: object, most: int) -> None:
    if not isinstance(text, str):
        msg = f"{what} must be a str, not {type(text).__name__}: {text!r}"
        raise TypeError(msg)
    if not 0 < len(text) <= most:
        msg = f"{what} must be 1 to {most} characters, not {len(text)}: {text!r}"
        raise ValueError(msg)


def _check_name(what: str, name: object, most: int) -> None:
    _check_str(f"a {what} name", name, most)
    if name in _RESERVED:
        msg = (
            f"{what} name {name!r} is taken by a LogRecord attribute or a "
            f"JSONFormatter field; choose another (names are case-sensitive)"
        )
        raise ValueError(msg)


def _check_metric(name: str, metric: object) -> tuple[float, object]:
    """Return the value and the unit of one metric."""
    value: object = metric
    unit: object = "None"
    if isinstance(metric, (tuple, list)):
        if len(metric) != 2:
            msg = f"metric {name!r} must be a number or a (number, unit) pair: {metric!r}"
            raise ValueError(msg)
        value, unit = metric
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        msg = f"metric {name!r} must be a number, not {type(value).__name__}: {value!r}"
        raise TypeError(msg)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        msg = f"metric {name!r} must be a finite number: {value!r}"
        raise ValueError(msg)
    if not isinstance(unit, str) or unit not in UNITS:
        msg = f"metric {name!r} has unknown unit {unit!r}; use one of {sorted(UNITS)}"
        raise ValueError(msg)
    return value, unit
