"""Nox sessions: the test matrix, type checking, lint and the packaging check.

`nox` runs the default sessions; `nox -s tests-3.9` runs one of the matrix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
TEST_DEPS = nox.project.dependency_groups(PYPROJECT, "test")
PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
OLDEST = PYTHONS[0]
# The classifiers' versions past PYTHONS: Debian sid's binaries, run in the root
# that .ci/sid-root keeps (their C library is newer than this machine's).
SID_PYTHONS = [
    c.rpartition(" :: ")[2]
    for c in PYPROJECT["project"]["classifiers"]
    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    and c.rpartition(" :: ")[2] not in PYTHONS
]
SID_ROOT = ROOT / ".ci" / "sid-root"
SID_TESTS = [f"tests-{v}" for v in SID_PYTHONS]

# mypy 2.x refuses `python_version = 3.9`, which mypy.ini checks against.
MYPY = "mypy==1.20.2"
PYRIGHT = "pyright==1.1.414"
# A new ruff release can add rules to the selected families; upgrade on purpose.
RUFF = "ruff==0.17.6"
# What the README's recipes are checked against: the newest releases when they
# were last checked. Raise them on purpose, running `nox -s integrations`.
FRAMEWORKS = [
    "gunicorn==27.0.1",
    "uvicorn==0.54.0",
    "PyYAML==6.0.4",
    "Django==6.1.3",
    "celery==5.7.0",
    "structlog==26.1.0",
    "pytest==9.2.0",
]

# What the green and prefork tests need (the other test sessions skip them).
GREEN = ["gevent==26.9.0", "eventlet==0.41.3", "billiard==4.3.2", "celery==5.7.0"]
COVERAGE = "coverage==7.17.5"

# The suite, as every test session runs it: warnings are errors (an unclosed
# socket is a bug), and so are dev mode's checks.
UNITTEST_ARGS = ["-m", "unittest", "discover", "-s", "tests", "-t", "."]
UNITTEST = ["python", "-X", "dev", "-W", "error", *UNITTEST_ARGS]

nox.options.sessions = [
    "tests",
    *SID_TESTS,
    "green",
    "coverage",
    "mypy",
    "pyright",
    "lint",
    "package",
    "integrations",
]
nox.options.default_venv_backend = "venv"
# A missing interpreter is an error (with CI set) or a skip, never a download.
nox.options.download_python = "never"


def _pyenv_root() -> Path:
    if root := os.environ.get("PYENV_ROOT"):
        return Path(root)
    if pyenv := shutil.which("pyenv"):
        done = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip())
    return Path.home() / ".pyenv"


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    # "3.12.1" -> (3, 12, 1); a suffix such as "3.13-dev" sorts as (3, 13).
    parts = bin_dir.parent.name.split(".")
    return tuple(int(part) for part in parts if part.isdigit())


def _put_pyenv_pythons_on_path() -> None:
    """Let nox find python3.9 ... python3.13 from pyenv without its shims.

    A shim answers for the pyenv-selected version only, so the real `bin`
    directories go first; for two patch releases of one minor, the newest wins.
    """
    versions = _pyenv_root() / "versions"
    if not versions.is_dir():
        return
    bin_dirs = sorted(versions.glob("3.*/bin"), key=_version_key, reverse=True)
    path = os.environ.get("PATH", "").split(os.pathsep)
    new = [str(d) for d in bin_dirs if d.is_dir() and str(d) not in path]
    os.environ["PATH"] = os.pathsep.join([*new, *path])


_put_pyenv_pythons_on_path()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the unit tests against the installed package (not `src/`)."""
    # setuptools builds in ./build and packs all of build/lib: a module deleted
    # from src/ would still be installed, and tested, unless that goes first.
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    session.install(".", *TEST_DEPS)
    # Guard against a PYTHONPATH that would put src/ ahead of the installed copy.
    session.run(
        "python",
        "-c",
        "import globus.cwlogger as m; assert 'site-packages' in m.__file__, m.__file__",
        silent=True,
    )
    session.run(*UNITTEST, *session.posargs)


def _sid_tests(version: str) -> None:
    """Define `tests-VERSION`: the `tests` session, in the Debian sid root."""
    python = f"python{version}"
    venv = f"/venv/tests-{version}"  # inside the root; every run makes it anew

    def in_root(session: nox.Session, *args: str, silent: bool = False) -> None:
        path = f"PATH={venv}/bin:/usr/local/bin:/usr/bin:/bin"
        command = [str(SID_ROOT), "run", "env", f"VIRTUAL_ENV={venv}", path, *args]
        session.run(*command, external=True, silent=silent)

    def tests_sid(session: nox.Session) -> None:
        found = subprocess.run([SID_ROOT, "path"], capture_output=True, text=True, check=False)
        if found.returncode or not Path(found.stdout.strip(), "usr", "bin", python).exists():
            # What nox raises itself: a skip, or with CI set a failure.
            why = found.stderr.strip() or f"add {version} to PYTHONS in .ci/sid-root"
            msg = f"{python} in the Debian sid root ({why})"
            raise nox.virtualenv.InterpreterNotFound(msg)
        shutil.rmtree(ROOT / "build", ignore_errors=True)  # as in `tests`
        in_root(session, python, "-m", "venv", "--clear", venv)
        in_root(session, "python", "-m", "pip", "install", ".", *TEST_DEPS, silent=True)
        check = "import globus.cwlogger as m; assert 'site-packages' in m.__file__, m.__file__"
        in_root(session, "python", "-c", check, silent=True)
        in_root(session, *UNITTEST, *session.posargs)

    tests_sid.__doc__ = f"Run the unit tests on Debian sid's CPython {version} (.ci/sid-root)."
    nox.session(name=f"tests-{version}", python=False)(tests_sid)


for _version in SID_PYTHONS:
    _sid_tests(_version)


@nox.session(python="3.12")
def green(session: nox.Session) -> None:
    """The tests that need gevent, eventlet, billiard and Celery installed."""
    session.install(".", *TEST_DEPS, *GREEN)
    session.run("python", "-X", "dev", "-W", "error", "-m", "unittest", "-v",
                "tests.test_green", "tests.test_prefork", *session.posargs)  # fmt: skip


@nox.session(python="3.12")
def coverage(session: nox.Session) -> None:
    """The whole suite (green tests included) under coverage, branches, forked
    children and subprocesses combined; fails below pyproject.toml's floor."""
    session.install(".", *TEST_DEPS, *GREEN, COVERAGE)
    session.run("coverage", "erase")
    env = {"COVERAGE_RCFILE": str(ROOT / "pyproject.toml")}  # for the subprocesses too
    session.run("python", "-X", "dev", "-W", "error", "-m", "coverage", "run", *UNITTEST_ARGS,
                env=env)  # fmt: skip
    session.run("coverage", "combine", "--quiet", env=env)
    session.run("coverage", "report", env=env)


@nox.session(python="3.12")
def mypy(session: nox.Session) -> None:
    """Type-check src, tests, benchmarks and this file (mypy.ini lists them).

    mypy.ini checks as Python 3.9, and mypy parses the installed packages it
    reads with 3.9's grammar. The newest nox and packaging need 3.10 (`match`),
    so those packages come from a 3.9 venv: the versions a 3.9 user installs.
    """
    session.install(MYPY)
    context = Path(session.create_tmp()) / f"py{OLDEST}"
    session.run(f"python{OLDEST}", "-m", "venv", "--clear", str(context), external=True)
    # pytest: for the types the pytest plugin uses (pytest_plugin.py).
    python = _pip_install(session, context, "nox", "pytest", "types-PyYAML", *TEST_DEPS, str(ROOT))
    session.run("mypy", "--python-executable", str(python), *session.posargs)


@nox.session(python="3.12")
def pyright(session: nox.Session) -> None:
    """The consumer's view (tests/typing_api.py) under pyright's strict mode."""
    session.install(PYRIGHT, ".")
    session.run("pyright", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def package(session: nox.Session) -> None:
    """Build, check the artifacts, and install beside other `globus.*` code."""
    session.install("build", "twine")
    with tempfile.TemporaryDirectory(prefix="globus-cwlogger-package-") as tmp_name:
        tmp = Path(tmp_name)
        dist = tmp / "dist"
        session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
        wheel = _only(session, dist, "*.whl")
        sdist = _only(session, dist, "*.tar.gz")
        session.run("twine", "check", "--strict", str(wheel), str(sdist))
        _check_wheel(session, wheel)
        _check_sdist(session, sdist)

        other_wheel = _build_othertool(session, tmp)
        python = _fresh_venv(session, tmp / "venv", wheel, other_wheel)
        _check_installed(session, python, tmp)


@nox.session(python="3.12")
def integrations(session: nox.Session) -> None:
    """The README's recipes under the real frameworks (tests/integrations/run.py).

    gunicorn, uvicorn, Django, Celery, structlog, a cron-style script and the
    pytest fixture; posargs name the checks to run (`-- --list`).
    """
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # as in `tests`
    session.install(".", *FRAMEWORKS)
    session.run("python", "tests/integrations/run.py", *session.posargs)


def _only(session: nox.Session, directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        session.error(f"expected one {pattern} in {directory}, found {found}")
    return found[0]


def _check_wheel(session: nox.Session, wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    if "globus/__init__.py" in names:
        session.error(f"{wheel.name} holds globus/__init__.py: globus must stay a namespace")
    for required in ("globus/cwlogger/__init__.py", "globus/cwlogger/py.typed"):
        if required not in names:
            session.error(f"{wheel.name} lacks {required}")
    stray = sorted(
        n for n in names if not n.startswith("globus/cwlogger/") and ".dist-info/" not in n
    )
    if stray:
        session.error(f"{wheel.name} holds files outside globus/cwlogger/: {stray}")


def _check_sdist(session: nox.Session, sdist: Path) -> None:
    with tarfile.open(sdist) as tf:
        # Drop the top directory, "globus_cw_loghandler-1.0.0/".
        names = {name.partition("/")[2] for name in tf.getnames()}
    if "src/globus/cwlogger/py.typed" not in names:
        session.error(f"{sdist.name} lacks src/globus/cwlogger/py.typed")
    # setuptools adds tests/test*.py by itself but not their helpers, so ask for all.
    tests = {path.relative_to(ROOT).as_posix() for path in (ROOT / "tests").rglob("*.py")}
    if missing := sorted(tests - names):
        session.error(f"{sdist.name} lacks {missing} (MANIFEST.in: graft tests)")


def _build_othertool(session: nox.Session, tmp: Path) -> Path:
    """Build a second distribution that also installs under `globus.`."""
    project = tmp / "othertool"
    package_dir = project / "src" / "globus" / "othertool"
    package_dir.mkdir(parents=True)
    (package_dir / "__init__.py").write_text("VALUE = 42\n")
    (project / "pyproject.toml").write_text(
        "[build-system]\n"
        'requires = ["setuptools>=77"]\n'
        'build-backend = "setuptools.build_meta"\n'
        "\n"
        "[project]\n"
        'name = "globus-othertool"\n'
        'version = "0.1"\n'
        "\n"
        "[tool.setuptools.packages.find]\n"
        'where = ["src"]\n'
        'include = ["globus.othertool*"]\n'
    )
    dist = tmp / "other-dist"
    session.run("python", "-m", "build", "--wheel", "--outdir", str(dist), str(project))
    return _only(session, dist, "*.whl")


def _fresh_venv(session: nox.Session, venv: Path, *wheels: Path) -> Path:
    """A venv of its own (not the session's), with only the wheels installed."""
    session.run("python", "-m", "venv", str(venv))
    return _pip_install(session, venv, *map(str, wheels))


def _pip_install(session: nox.Session, venv: Path, *requirements: str) -> Path:
    """Install into a venv that is not the session's; return its python."""
    python = venv / "bin" / "python"
    session.run(
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        *requirements,
        external=True,
    )
    return python


def _check_installed(session: nox.Session, python: Path, tmp: Path) -> None:
    # Run from the temporary directory, so nothing of the checkout is importable.
    with session.chdir(tmp):
        session.run(
            str(python),
            "-c",
            "import globus.cwlogger, globus.othertool; "
            "assert globus.othertool.VALUE == 42; "
            "from globus.cwlogger import GlobusSocketHandler, cloudwatch_handler; "
            "assert isinstance(cloudwatch_handler, GlobusSocketHandler)",
            external=True,
        )
        session.run(str(python.parent / "globus-cwlogger"), "--help", external=True, silent=True)

    # An older service with a pkgutil-style globus/__init__.py of its own.
    oldapp = tmp / "oldapp" / "globus"
    oldapp.mkdir(parents=True)
    (oldapp / "__init__.py").write_text(
        "from pkgutil import extend_path\n__path__ = extend_path(__path__, __name__)\n"
    )
    (oldapp / "oldservice.py").write_text('NAME = "old"\n')
    with session.chdir(oldapp.parent):
        session.run(
            str(python),
            "-c",
            "import globus.oldservice, globus.cwlogger, globus.othertool; "
            "assert globus.oldservice.NAME == 'old'; "
            "assert globus.othertool.VALUE == 42",
            external=True,
        )

    purelib = session.run(
        str(python),
        "-c",
        "import sysconfig; print(sysconfig.get_path('purelib'))",
        external=True,
        silent=True,
    )
    site_packages = Path(str(purelib).strip())
    if not (site_packages / "globus" / "cwlogger" / "py.typed").is_file():
        session.error(f"py.typed is not installed in {site_packages / 'globus' / 'cwlogger'}")
    if (site_packages / "globus" / "__init__.py").exists():
        session.error(f"{site_packages / 'globus' / '__init__.py'} was installed")


def _benchmark(session: nox.Session, script: str) -> None:
    """Run a script of benchmarks/ against the installed package."""
    session.install(".")
    session.run("python", f"benchmarks/{script}", *session.posargs)


@nox.session
def faults(session: nox.Session) -> None:
    """The fault matrix: lost records, slowest call, resume time (not default)."""
    session.install(GREEN[0])  # the gevent rows
    _benchmark(session, "faults.py")


@nox.session
def soak(session: nox.Session) -> None:
    """200000 records: rate, memory growth, file descriptors (not default)."""
    _benchmark(session, "soak.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks as ratios against baselines of the same run (not default)."""
    _apt_install(session, "valgrind")  # a missed sync ratio fails only if cost's count misses
    _benchmark(session, "bench.py")


# The baseline of the JSONFormatter cost target; upgrade on purpose.
PYTHON_JSON_LOGGER = "python-json-logger==4.2.0"


@nox.session
def cost(session: nox.Session) -> None:
    """Instructions and system calls per record: callgrind and strace (not default)."""
    _apt_install(session, "valgrind", "strace")
    session.install(PYTHON_JSON_LOGGER)
    _benchmark(session, "cost.py")


def _apt_install(session: nox.Session, *tools: str) -> None:
    """Install the Debian packages of these commands if they are missing."""
    if missing := [tool for tool in tools if shutil.which(tool) is None]:
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-qq", external=True, env=env)
        session.run("apt-get", "install", "-y", "-qq", *missing, external=True, env=env)


@nox.session
def alternatives(session: nox.Session) -> None:
    """The other clients of the daemon in one run: delivered, lost, time (not default)."""
    _benchmark(session, "alternatives.py")


@nox.session
def spool(session: nox.Session) -> None:
    """The durable spool's figures: kill -9, disk full, replay pace (2 minutes, not default)."""
    _benchmark(session, "spool.py")
