"""Instructions and system calls per record, counted in the client process.

    PYTHONPATH=src python benchmarks/cost.py [--only NAMES] [--json OUT] [--markdown]
    python benchmarks/cost.py --show [--markdown]    # the saved results again
    python benchmarks/cost.py --annotate socket      # where one variant's instructions go

How it counts: each variant runs in a process of its own under ``valgrind
--tool=callgrind``, twice, with 1000 and then 5000 records after the same
warm-up, and (instructions at 5000 - instructions at 1000) / 4000 is the
cost of one record: start-up, imports, warm-up and exit cancel out.  Only
the main thread counts (``--separate-threads=yes``): for GlobusQueueHandler
that is the caller, and the drain thread's count is reported beside it.
System calls are counted the same way by ``strace -c`` without ``-f``, which
follows the main thread only.  The stand-in daemon (``listener.py``, through
bench.py's Listener) runs in its own process, outside valgrind and strace,
and must acknowledge every record sent.  Hash randomization is off
(PYTHONHASHSEED=0), so the same code gives the same count run after run; a
variant whose package source changed between its two runs is measured again.

The counts are of the interpreter running this script (printed), on the
package it imports; ``--only`` also measures each named variant's baseline,
so that its ratio is of one run.  Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import json
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import callgrind
from bench import (
    HERE,
    PACKAGE_ROOT,
    TYPICAL,
    BareHandler,
    Listener,
    _env,
    _floor,
    _git_describe,
    _handler,
    _log,
    _logger,
    _request,
    columns,
)

from globus.cwlogger import GlobusQueueHandler, JSONFormatter
from globus.cwlogger.protocol import encode_event

DEFAULT_JSON = HERE / "results" / "cost.json"
SMALL, LARGE = 1000, 5000  # records per run; the figure is the difference per record
WARMUP = 200  # records before either run
#: The extra= fields of every JSON row (the formatters alone and through the handler).
EXTRA = {"request_id": "b1946ac9", "path": "/v0.10/submission", "status": 202, "duration_ms": 12.7}

Run = Callable[[int], object]
Workload = tuple[Run, Callable[[], object]]  # run k records; close


# -- the variants (each built and run in a child process) ---------------------


def _nothing() -> None:
    pass


def _loop(address: str) -> Workload:
    request = _request(TYPICAL)
    return (lambda k: _floor(address, request, k)), _nothing


def _null(address: str) -> Workload:
    logger = _logger(logging.NullHandler())
    return (lambda k: _log(logger, k)), _nothing


def _bare(address: str) -> Workload:
    logger = _logger(BareHandler(address, _request(TYPICAL)))
    return (lambda k: _log(logger, k)), _nothing


def _socket(address: str) -> Workload:
    handler = _handler(address)
    logger = _logger(handler)
    return (lambda k: _log(logger, k)), handler.close


def _socket_json(address: str) -> Workload:
    handler = _handler(address)
    handler.setFormatter(JSONFormatter())
    info = _logger(handler).info

    def run(records: int) -> None:
        for _ in range(records):
            info(TYPICAL, extra=EXTRA)

    return run, handler.close


def _queued(address: str) -> Workload:
    # close() waits one timeout for the queue to drain: under valgrind the
    # drain is some fifty times slower, so give it time (the caller's path
    # does not read the timeout).
    handler = GlobusQueueHandler(host=address, fallback="off", timeout=120)
    logger = _logger(handler)
    return (lambda k: _log(logger, k)), handler.close


def _record() -> logging.LogRecord:
    """The record every formatter row formats: TYPICAL, with EXTRA."""
    logger = logging.getLogger("globus.cwlogger.cost")
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, TYPICAL, (), None, "run", EXTRA
    )
    # A fixed time, so that every run formats the same digits.
    record.created, record.msecs = 1764090000.123, 123.0
    return record


def _python_json_logger() -> logging.Formatter:
    """python-json-logger's JsonFormatter, writing JSONFormatter's fields
    under the same keys (its other options at their defaults)."""
    module = importlib.import_module("pythonjsonlogger.json")  # not type-checked: not installed
    formatter = module.JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )
    assert isinstance(formatter, logging.Formatter)
    return formatter


def _check_same_keys(record: logging.LogRecord) -> None:
    ours = json.loads(JSONFormatter().format(record))
    theirs = json.loads(_python_json_logger().format(record))
    if set(ours) != set(theirs):
        msg = f"the formatters write different keys: {sorted(ours)} vs {sorted(theirs)}"
        raise AssertionError(msg)


def _formatting(make: Callable[[], logging.Formatter]) -> Callable[[str], Workload]:
    def build(address: str) -> Workload:
        record = _record()
        _check_same_keys(record)
        format_ = make().format

        def run(records: int) -> None:
            for _ in range(records):
                format_(record)

        return run, _nothing

    return build


def _dumps_fields(address: str) -> Workload:
    """json.dumps alone, of the object JSONFormatter writes, with its options."""
    event = json.loads(JSONFormatter().format(_record()))
    dumps = json.dumps

    def run(records: int) -> None:
        for _ in range(records):
            dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=repr)

    return run, _nothing


def _encode(address: str) -> Workload:
    timestamp = int(time.time() * 1000)

    def run(records: int) -> None:
        for _ in range(records):
            encode_event(TYPICAL, timestamp)

    return run, _nothing


def _dumps(address: str) -> Workload:
    timestamp, dumps = int(time.time() * 1000), json.dumps

    def run(records: int) -> None:
        for _ in range(records):
            dumps({"message": TYPICAL, "timestamp": timestamp}).encode()

    return run, _nothing


@dataclass(frozen=True)
class Variant:
    """One row: what runs per record, and what it is compared with."""

    label: str
    build: Callable[[str], Workload]
    #: It runs this package's code per record (so its source is watched).
    ours: bool = False
    #: It talks to the stand-in: records are checked, system calls counted.
    daemon: bool = False
    baseline: str | None = None
    #: Fail when instructions / the baseline's are above this.
    target: float | None = None


VARIANTS: dict[str, Variant] = {
    "loop": Variant("bare loop: socket, connect, send, recv, close", _loop, daemon=True),
    "null": Variant("`logger.info` to a NullHandler (logging's own cost)", _null),
    "bare": Variant(
        "`logger.info`, bare handler (the loop's body as `emit`)",
        _bare,
        daemon=True,
        baseline="loop",
    ),
    "socket": Variant(
        "`logger.info`, GlobusSocketHandler",
        _socket,
        ours=True,
        daemon=True,
        baseline="bare",
        target=1.33,
    ),
    "socket-json": Variant(
        "`logger.info`, GlobusSocketHandler + JSONFormatter (4 extras)",
        _socket_json,
        ours=True,
        daemon=True,
        baseline="socket",
    ),
    "queued": Variant(
        "`logger.info`, GlobusQueueHandler: the caller's thread",
        _queued,
        ours=True,
        daemon=True,
        baseline="null",
        target=1.4,
    ),
    "encode": Variant(
        "`protocol.encode_event`, 200 B message", _encode, ours=True, baseline="dumps"
    ),
    "dumps": Variant("`json.dumps({message, timestamp}).encode()`", _dumps),
    "json": Variant(
        "`JSONFormatter.format` alone (4 fields + 4 extras)",
        _formatting(JSONFormatter),
        ours=True,
        baseline="pjl",
        target=0.65,
    ),
    "pjl": Variant(
        "python-json-logger `JsonFormatter.format`, same record and keys",
        _formatting(_python_json_logger),
    ),
    "dumps-fields": Variant(
        "`json.dumps` alone of the object JSONFormatter writes",
        _dumps_fields,
        baseline="json",
    ),
}


def child(name: str, records: int, display: str) -> int:
    """Build the variant, warm it up, run ``records`` records, close."""
    run, close = VARIANTS[name].build("\0" + display[1:])
    run(WARMUP)
    gc.collect()
    run(records)
    close()
    return 0


# -- counting ------------------------------------------------------------------


def _child_command(
    name: str, records: int, listener: Listener, python: str = sys.executable
) -> list[str]:
    return [python, __file__, "--child", name, str(records), listener.display]


def _child_env() -> dict[str, str]:
    env = _env()
    env["PYTHONHASHSEED"] = "0"
    return env


def _run_child(
    command: list[str], what: str, listener: Listener, daemon: bool, records: int
) -> None:
    before = listener.acknowledged() if daemon else 0
    done = subprocess.run(command, env=_child_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        raise RuntimeError(msg)
    if daemon:
        listener.share(what, WARMUP + records, before)


def _valgrind(out: Path, *options: str) -> list[str]:
    # One file per thread: OUT-01 for the main thread, OUT-02...
    return [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={out}",
        "--quiet",
        *options,
    ]


def instructions(name: str, records: int, listener: Listener, tmp: Path) -> dict[int, int]:
    """Instructions of each thread (1 is the main thread) of one child."""
    out = tmp / f"callgrind.{name}.{records}"
    command = [*_valgrind(out), *_child_command(name, records, listener)]
    _run_child(
        command, f"{name}, {records} records, callgrind", listener, VARIANTS[name].daemon, records
    )
    totals = {
        int(path.name.rsplit("-", 1)[1]): callgrind.summary(path)
        for path in tmp.glob(out.name + "-*")
    }
    if 1 not in totals:
        msg = f"callgrind wrote no file for the main thread beside {out}"
        raise RuntimeError(msg)
    return totals


def strace(name: str, records: int, listener: Listener, tmp: Path) -> dict[str, int]:
    """System calls of the main thread by name (failed ones too)."""
    out = tmp / f"strace.{name}.{records}"
    command = ["strace", "-c", "-U", "name,calls", "-o", str(out)]
    _run_child(
        [*command, *_child_command(name, records, listener)],
        f"{name}, {records} records, strace",
        listener,
        True,
        records,
    )
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            calls[parts[0]] = int(parts[1])
    return calls


def fingerprint() -> str:
    """A hash of the package's source, to notice it changing mid-measurement."""
    digest = hashlib.sha256()
    for path in sorted((PACKAGE_ROOT / "globus" / "cwlogger").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _package_git() -> str | None:
    """The commit of the package measured (of this checkout if it is not in one)."""
    done = subprocess.run(
        ["git", "-C", str(PACKAGE_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    return _git_describe()


def _per_record(small: float, large: float) -> float:
    return (large - small) / (LARGE - SMALL)


@dataclass
class Count:
    """What one record of one variant costs, and how it compares."""

    label: str
    #: Instructions per record of the main thread, and of the others (a drain).
    instructions: float
    other_threads: float
    #: System calls per record of the main thread, by name (None: not counted).
    syscalls: dict[str, float] | None
    #: Instructions of each run ("1000", "5000"), by thread ("1" is the main one).
    totals: dict[str, dict[str, int]]
    package: str  # fingerprint() of the package measured
    git: str | None
    measured: str
    baseline: str | None = None
    ratio: float | None = None
    target: float | None = None
    passed: bool | None = None


@dataclass
class Results:
    """A run, as cost.json holds it."""

    python: str
    executable: str
    valgrind: str
    git: str | None
    counts: dict[str, Count]
    records: tuple[int, int] = (SMALL, LARGE)
    seconds: float = 0.0
    #: The variants that could not be measured this time, and why.
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        """The variants that missed their target or could not be measured."""
        missed = [name for name, count in self.counts.items() if count.passed is False]
        return [*missed, *self.errors]

    def compare(self) -> None:
        """Set each count's ratio to its baseline and whether it meets its target."""
        for name, count in self.counts.items():
            variant = VARIANTS[name]
            count.baseline, count.target = variant.baseline, variant.target
            count.ratio = count.passed = None
            base = self.counts.get(variant.baseline) if variant.baseline else None
            if base is not None:
                count.ratio = count.instructions / base.instructions
                if variant.target is not None:
                    count.passed = count.ratio <= variant.target

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Results | None:
        """The results saved in ``path``, or None if there are none."""
        try:
            data = json.loads(path.read_text())
            counts = {name: Count(**count) for name, count in data.pop("counts").items()}
            return cls(**data, counts=counts)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None


def measure(name: str, listener: Listener, tmp: Path, syscalls: bool) -> Count:
    """The counts of one variant, taken again if its package changed meanwhile."""
    variant = VARIANTS[name]
    shortfalls = len(listener.shortfalls)
    for _ in range(3):
        package = fingerprint()
        # One run without valgrind first: it fails fast if the variant is broken,
        # and it writes __pycache__, which would otherwise cost the first run more.
        _run_child(
            _child_command(name, 10, listener), f"{name}, check", listener, variant.daemon, 10
        )
        small = instructions(name, SMALL, listener, tmp)
        large = instructions(name, LARGE, listener, tmp)
        calls: dict[str, float] = {}
        if syscalls and variant.daemon:
            few, many = strace(name, SMALL, listener, tmp), strace(name, LARGE, listener, tmp)
            for call in sorted(set(few) | set(many)):
                per = _per_record(few.get(call, 0), many.get(call, 0))
                if abs(per) >= 0.005:
                    calls[call] = round(per, 3)
        if not variant.ours or fingerprint() == package:
            break
        sys.stderr.write(f"cost: the package changed while {name} was measured; again\n")
    else:
        msg = "the package kept changing while it was measured"
        raise RuntimeError(msg)
    if len(listener.shortfalls) > shortfalls:
        msg = "records not acknowledged: " + "; ".join(listener.shortfalls[shortfalls:])
        raise RuntimeError(msg)
    threads = (set(small) | set(large)) - {1}
    return Count(
        label=variant.label,
        instructions=_per_record(small[1], large[1]),
        other_threads=_per_record(
            sum(small.get(t, 0) for t in threads), sum(large.get(t, 0) for t in threads)
        ),
        syscalls=calls if syscalls and variant.daemon else None,
        totals={
            str(records): {str(thread): n for thread, n in sorted(run.items())}
            for records, run in ((SMALL, small), (LARGE, large))
        },
        package=package,
        git=_package_git(),
        measured=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


# -- the results ----------------------------------------------------------------


def _thousands(value: float) -> str:
    return f"{value / 1000:.1f}k"


def _syscalls(count: Count) -> str:
    if count.syscalls is None:
        return ""
    total = sum(count.syscalls.values())
    return f"{total:.2f}: " + ", ".join(f"{name} {per:g}" for name, per in count.syscalls.items())


def _rows(results: Results, markdown: bool) -> list[list[str]]:
    rows = []
    for name in VARIANTS:
        count = results.counts.get(name)
        if count is None:
            continue
        figure = _thousands(count.instructions) if markdown else f"{count.instructions:,.0f}"
        if count.other_threads >= 1:  # the queue handler's drain thread
            figure += f" (+{_thousands(count.other_threads)} drain thread)"
        ratio = "" if count.ratio is None else f"{count.ratio:.3f} x {count.baseline}"
        target = "" if count.target is None else f"<= {count.target}"
        if markdown:
            target = f"{target}: {'met' if count.passed else 'missed'}" if target else "information"
            rows.append([f"`{name}`", count.label, figure, ratio, target, _syscalls(count)])
        else:
            verdict = {None: "", True: "pass", False: "FAIL"}[count.passed]
            rows.append([name, figure, ratio, target, verdict, _syscalls(count)])
    return rows


def report(results: Results, markdown: bool) -> str:
    """The table, as aligned columns or as Markdown (README.md shows that)."""
    if markdown:
        head = [
            "variant",
            "what runs, per record",
            "instructions",
            "ratio",
            "target",
            "system calls",
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in _rows(results, markdown=True)]
    else:
        head = ["variant", "instructions", "ratio", "target", "result", "system calls"]
        lines = columns([head, *_rows(results, markdown=False)])
        lines += [f"  {name}: {count.label}" for name, count in results.counts.items()]
    lines += [f"  {name}: NOT MEASURED: {error}" for name, error in results.errors.items()]
    small, large = results.records
    python = f"Python {results.python}"
    if not markdown:  # a path of this machine's
        python += f" ({results.executable})"
    lines += [
        *([""] if markdown else []),
        f"{python}, {results.valgrind}, git {results.git}: instructions of the main thread "
        f"per record, (N={large} - N={small}) / {large - small}.",
    ]
    return "\n".join(lines)


def _tool_version(command: str) -> str:
    done = subprocess.run([command, "--version"], capture_output=True, text=True, check=True)
    return done.stdout.split("\n")[0].strip()


def _wanted(only: Sequence[str]) -> list[str]:
    """The named variants and their baselines, in table order."""
    names = set(only)
    names |= {b for name in only if (b := VARIANTS[name].baseline) is not None}
    return [name for name in VARIANTS if name in names]


def run(names: Sequence[str], out: Path, syscalls: bool) -> Results:
    """Measure the variants named; save them in ``out`` with the counts it
    already holds for this Python version (each count says when it was taken)."""
    missing = [t for t in ("valgrind", *(("strace",) if syscalls else ())) if not shutil.which(t)]
    if missing:
        msg = f"not installed: {', '.join(missing)} (apt-get install {' '.join(missing)})"
        raise RuntimeError(msg)
    previous = Results.load(out)
    results = Results(
        python=platform.python_version(),
        executable=sys.executable,
        valgrind=_tool_version("valgrind"),
        git=_package_git(),
        counts={}
        if previous is None or previous.python != platform.python_version()
        else previous.counts,
    )
    started = time.perf_counter()
    listener = Listener()
    try:
        with tempfile.TemporaryDirectory(prefix="globus-cwlogger-cost-") as tmp:
            for name in names:
                sys.stderr.write(f"cost: {name} ...")
                sys.stderr.flush()
                begun = time.perf_counter()
                try:
                    results.counts[name] = measure(name, listener, Path(tmp), syscalls)
                except RuntimeError as error:  # no count rather than an old one
                    results.counts.pop(name, None)
                    results.errors[name] = str(error)
                sys.stderr.write(f" {time.perf_counter() - begun:.0f} s\n")
    finally:
        listener.stop()
    results.counts = {name: results.counts[name] for name in VARIANTS if name in results.counts}
    results.compare()
    results.seconds = time.perf_counter() - started
    results.save(out)
    return results


def current(name: str, out: Path = DEFAULT_JSON) -> Count | None:
    """The count of one variant, compared with its baseline, for the package
    as it is now: from ``out`` when that holds one taken of the same source
    with this Python, else measured now (and saved).  None without valgrind."""
    results = Results.load(out)
    if results is not None and results.python == platform.python_version():
        count = results.counts.get(name)
        if count is not None and count.ratio is not None and count.package == fingerprint():
            return count
    if shutil.which("valgrind") is None:
        return None
    return run(_wanted([name]), out, syscalls=False).counts.get(name)


def annotate(name: str, python: str, limit: int) -> int:
    """Print where one variant's instructions per record go, by function
    (the main thread, N=LARGE minus N=SMALL as for the figures)."""
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info >= (3, 12), sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    perf = version[0] == "True"  # Python functions named through -X perf's trampolines
    runs: list[callgrind.Functions] = []
    listener = Listener()
    try:
        with tempfile.TemporaryDirectory(prefix="globus-cwlogger-cost-") as tmp:
            for records in (SMALL, LARGE):
                out = Path(tmp) / f"callgrind.{records}.%p"
                command = [
                    *_valgrind(out, "--dump-instr=no", "--dump-line=no"),
                    python,
                    *(["-X", "perf"] if perf else []),
                    *_child_command(name, records, listener)[1:],
                ]
                what = f"{name}, {records} records, annotated"
                _run_child(command, what, listener, VARIANTS[name].daemon, records)
                (main_thread,) = Path(tmp).glob(f"callgrind.{records}.*-01")
                pid = main_thread.name.split(".")[2].split("-")[0]
                perf_map = Path(f"/tmp/perf-{pid}.map")
                try:
                    runs.append(callgrind.functions(main_thread, perf_map if perf else None))
                finally:
                    perf_map.unlink(missing_ok=True)
    finally:
        listener.stop()
    costs = callgrind.per_record(runs[0], runs[1], LARGE - SMALL)
    total = sum(costs.own.values())
    lines = [
        f"{name}: {VARIANTS[name].label}; Python {version[1]}"
        f"{' -X perf' if perf else ''}: {total:,.0f} instructions per record"
        f" (main thread){' in this mode' if perf else ''}",
        "",
    ]
    if perf:
        lines += ["Python functions, by instructions with callees (per record):"]
        python_rows = callgrind.top(costs, python=True, limit=limit)
        lines += [*columns([["with callees", "calls", "function"], *python_rows]), ""]
    else:
        lines.append("(Python 3.12 or newer, given with --python, also names Python functions)\n")
    lines += ["C functions, by their own instructions (per record):"]
    c_rows = callgrind.top(costs, python=False, limit=limit)
    lines += columns([["own", "with callees", "calls", "function"], *c_rows])
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(VARIANTS),
        help=f"comma-separated variants, each with its baseline (default: {','.join(VARIANTS)})",
    )
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--show", action="store_true", help="print the saved results, measure nothing"
    )
    parser.add_argument("--no-strace", action="store_true", help="count instructions only")
    parser.add_argument(
        "--annotate", metavar="NAME", help="print where one variant's instructions go, by function"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of --annotate (3.12 or newer names Python functions too)",
    )
    parser.add_argument("--limit", type=int, default=30, help="rows of --annotate (default 30)")
    parser.add_argument(
        "--child", nargs=3, metavar=("NAME", "N", "ADDRESS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        name, records, display = args.child
        return child(name, int(records), display)
    if args.annotate:
        if args.annotate not in VARIANTS:
            parser.error(f"unknown variant {args.annotate!r}; choose from {','.join(VARIANTS)}")
        return annotate(args.annotate, args.python, args.limit)
    if args.show:
        results = Results.load(args.json)
        if results is None:
            parser.error(f"no results in {args.json}")
        sys.stdout.write(report(results, args.markdown) + "\n")
        return 1 if results.failed else 0
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {','.join(VARIANTS)}")
    sys.stderr.write(f"cost: Python {platform.python_version()} at {sys.executable}\n")
    try:
        results = run(_wanted(only), args.json, not args.no_strace)
    except RuntimeError as error:
        sys.stderr.write(f"cost: {error}\n")
        return 2
    sys.stdout.write(report(results, args.markdown) + "\n")
    targets = [name for name, count in results.counts.items() if count.target is not None]
    failed = results.failed
    sys.stdout.write(
        f"{len(targets) - len(failed)} of {len(targets)} targets met"
        f"{' (missed: ' + ', '.join(failed) + ')' if failed else ''}; "
        f"{results.seconds:.0f} s; results: {args.json}\n"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
