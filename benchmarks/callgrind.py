"""Reading callgrind's output files: totals, and costs per function.

Python functions have no symbols of their own: every one runs inside the
interpreter's ``_PyEval_EvalFrameDefault``.  On Python 3.12 and newer, ``-X
perf`` sends each call of a Python function through a small trampoline of
its own, an address that callgrind reports as a function, and the
interpreter writes which function each trampoline is for in
``/tmp/perf-PID.map``; :func:`functions` names them from it.  That mode
calls Python functions through the C stack instead of inlining them, so its
counts are higher than a plain run's: they tell where the cost goes, not
what it is.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")
_RECURSION = re.compile(r"'\d+$")


def summary(path: Path) -> int:
    """The instructions counted in one callgrind output file."""
    match = re.search(r"^summary: (\d+)$", path.read_text(), re.MULTILINE)
    if match is None:
        msg = f"no summary in {path}"
        raise ValueError(msg)
    return int(match.group(1))


@dataclass
class Functions:
    """Instructions by function of one run: own, with callees, and calls."""

    own: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    inclusive: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))


def _perf_map(path: Path) -> dict[int, str]:
    """Trampoline addresses to Python functions, from ``-X perf``'s map."""
    names = {}
    for line in path.read_text().splitlines():
        start, _, rest = line.partition(" ")
        _, _, name = rest.partition(" ")
        names[int(start, 16)] = name.removeprefix("py::")
    return names


def _short(name: str) -> str:
    """``qualname:/path/to/file.py`` as ``qualname (file.py)``."""
    qualname, colon, filename = name.rpartition(":")
    return f"{qualname} ({Path(filename).name})" if colon else name


def functions(path: Path, perf_map: Path | None = None) -> Functions:
    """The costs per function in a file written with ``--dump-instr=no``.

    A call line's cost is the callee's inclusive cost from that caller;
    calls of a function to itself are left out of its inclusive cost, so
    that direct recursion is not counted twice.
    """
    python = _perf_map(perf_map) if perf_map is not None and perf_map.exists() else {}
    names: dict[str, str] = {}
    result = Functions()
    current = callee = ""
    count = 0  # calls of the pending call line; 0 when none is pending

    def name(text: str) -> str:
        match = _NAME.match(text)
        if match is None:  # not compressed
            found = text
        elif match.group(2) is not None:
            found = names[match.group(1)] = match.group(2)
        else:
            found = names[match.group(1)]
        found = _RECURSION.sub("", found)  # f'2: f called by itself, counted as f
        if found.startswith("0x") and (address := int(found, 16)) in python:
            return "py " + _short(python[address])
        return found

    for line in path.read_text().splitlines():
        if line.startswith("fn="):
            current = name(line[3:])
        elif line.startswith("cfn="):
            callee = name(line[4:])
        elif line.startswith("calls="):
            count = int(line[6:].split()[0])
        elif line and (line[0].isdigit() or line[0] in "+-*"):  # a cost line
            cost = int(line.split()[1])
            if count:
                result.calls[callee] += count
                if callee != current:
                    result.inclusive[current] += cost
                count = 0
            else:
                result.own[current] += cost
                result.inclusive[current] += cost
    return result


def per_record(small: Functions, large: Functions, records: int) -> Functions:
    """What ``records`` more records cost, per record, by function."""

    def diff(got: dict[str, float], base: dict[str, float]) -> defaultdict[str, float]:
        keys = set(got) | set(base)
        return defaultdict(float, {k: (got.get(k, 0) - base.get(k, 0)) / records for k in keys})

    return Functions(
        diff(large.own, small.own),
        diff(large.inclusive, small.inclusive),
        diff(large.calls, small.calls),
    )


def top(costs: Functions, *, python: bool, limit: int) -> list[list[str]]:
    """Rows of the costliest functions.  Python ones (named through ``-X
    perf``) by their instructions with callees, those called at least once
    in a hundred records: [with callees, calls, name].  The others (C) by
    their own instructions: [own, with callees, calls, name]."""
    if python:
        chosen = {
            n: c
            for n, c in costs.inclusive.items()
            if n.startswith("py ") and costs.calls[n] >= 0.01
        }
    else:
        chosen = {n: c for n, c in costs.own.items() if not n.startswith("py ")}
    rows = []
    for name in sorted(chosen, key=lambda n: -chosen[n])[:limit]:
        counts = [f"{costs.inclusive[name]:,.0f}", f"{costs.calls[name]:.2f}"]
        if not python:
            counts.insert(0, f"{costs.own[name]:,.0f}")
        rows.append([*counts, name.removeprefix("py ")])
    return rows
