"""The Dockerfile, its build context and its runtime lock, checked without a container engine.

hadolint lints the file; the rest reads the Dockerfile the way the builder would and
asserts what a build would otherwise be needed to notice: a runtime stage that adds
nothing but the virtual environment, a non-root numeric user, a health check, every
COPY source present in the build context and nothing secret or test-only in it.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
Run = Callable[..., subprocess.CompletedProcess[str]]
Tool = Callable[[str], str]
RUNTIME_BASE = "gcr.io/distroless/python3-debian12:nonroot"
# Python shipped by each Debian release (and so by its distroless image).
DEBIAN_PYTHON = {"12": "3.11.2"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse_dockerfile(text: str, build_args: dict[str, str] | None = None) -> list[Stage]:
    """Instructions per stage, continuation lines joined, comments dropped; FROM's ${ARG} resolved to the
    global ARG's default (what `docker build` uses) unless `build_args` overrides it."""
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    logical = re.sub(r"\\\n(\s*#.*\n)*", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = (build_args or {}).get(name, default)
        elif instruction == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], args).split()
            stages.append(Stage(base=words[0], name=words[2] if len(words) > 2 else None))
        elif stages:
            stages[-1].instructions.append((instruction, " ".join(args.split())))
    return stages


def test_every_base_image_is_a_build_argument_defaulting_to_the_public_one() -> None:
    text = DOCKERFILE.read_text()
    assert [stage.base for stage in parse_dockerfile(text)] == [
        "ghcr.io/astral-sh/uv:0.13.9",
        "debian:12-slim",
        RUNTIME_BASE,
    ]
    local = {"UV_IMAGE": "localhost/uv", "BUILD_BASE": "localhost/base", "RUNTIME_BASE": "localhost/base"}
    assert [stage.base for stage in parse_dockerfile(text, local)] == [
        "localhost/uv",
        "localhost/base",
        "localhost/base",
    ]
    assert all(line.split()[1].startswith("${") for line in text.splitlines() if line.startswith("FROM "))


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def build(stages: list[Stage]) -> Stage:
    return next(stage for stage in stages if stage.name == "build")


def test_hadolint_passes_at_the_strictest_threshold(tool: Tool, run: Run) -> None:
    result = run(tool("hadolint"), "--failure-threshold", "style", "--format", "json", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"


def test_hadolint_is_really_linting(tool: Tool, run: Run) -> None:
    result = run(tool("hadolint"), "--format", "json", "-", input="FROM python:latest\nRUN apt-get install gcc\n")
    assert result.returncode == 1
    assert "DL3007" in result.stdout


def test_runtime_stage_is_distroless_and_non_root(runtime: Stage) -> None:
    assert runtime.base == RUNTIME_BASE
    (user,) = runtime.args("USER")
    uid, _, gid = user.partition(":")
    # Numeric, or Kubernetes cannot verify runAsNonRoot against the image.
    assert uid.isdigit() and int(uid) != 0, user
    assert gid.isdigit() and int(gid) != 0, user


def test_runtime_stage_only_copies_the_venv_migrations_and_health_check(runtime: Stage) -> None:
    # No RUN at all: nothing can install a compiler or a package manager into the image.
    assert runtime.args("RUN") == []
    assert sorted(runtime.args("COPY")) == [
        "--from=build /opt/venv /opt/venv",
        "--from=build /src/migrations /app/migrations",
        "deploy/healthcheck.py /app/healthcheck.py",
    ]


def test_runtime_stage_has_a_health_check_and_the_conduit_entrypoint(runtime: Stage) -> None:
    (healthcheck,) = runtime.args("HEALTHCHECK")
    assert '"/app/healthcheck.py"' in healthcheck and "--interval=" in healthcheck
    assert runtime.args("ENTRYPOINT") == ['["/opt/venv/bin/conduit"]']
    assert runtime.args("CMD") == ['["proxy"]']


def test_build_python_matches_the_runtime_python(build: Stage, runtime: Stage) -> None:
    assert build.base.startswith("debian:12")
    debian = re.search(r"debian(\d+)", runtime.base)
    assert debian is not None
    python = DEBIAN_PYTHON[debian.group(1)]
    minor = python.rsplit(".", 1)[0]
    assert f"python{minor}" in " ".join(build.args("RUN"))
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python in SpecifierSet(requires), "the distroless base fixes the interpreter; pyproject must accept it"


def test_dependencies_come_from_the_hash_pinned_runtime_lock(build: Stage) -> None:
    runs = " ".join(build.args("RUN"))
    assert "--require-hashes --no-deps --requirement requirements-runtime.lock" in runs
    assert "uv pip install --no-deps ." in runs
    assert "requirements.lock" not in runs.replace("requirements-runtime.lock", "")


# --- build context -----------------------------------------------------------------


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per .dockerignore line, with Go filepath.Match semantics plus `**`."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, "")
            if token not in ("**/", "**", "*", "?"):
                regex += re.sub(r"\\\[(.*?)\\\]", r"[\1]", re.escape(token))
        rules.append((negated, re.compile(regex)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not negated
    return result


@pytest.mark.parametrize(
    "path",
    [
        "tests/deploy/test_image.py",
        "services/importer/tests/test_parse.py",
        "conftest.py",
        ".venv/bin/python",
        "shared/__pycache__/settings.cpython-311.pyc",
        "shared/settings.pyc",
        ".pytest_cache/v/cache/lastfailed",
        ".mypy_cache/3.11/shared/settings.data.json",
        ".ruff_cache/content",
        ".env",
        "demo/.env",
        ".git/HEAD",
        "helm/conduit/values.yaml",
        "docker-compose.yml",
        "requirements.lock",
        "bench/results/run.json",
        "devtools/servers.py",
    ],
)
def test_build_context_leaves_out(path: str) -> None:
    assert ignored(path, dockerignore_rules())


def test_build_context_keeps_every_copy_source_and_every_package(stages: list[Stage]) -> None:
    rules = dockerignore_rules()
    copies = [args.split()[:-1] for stage in stages for args in stage.args("COPY") if not args.startswith("--from")]
    sources = [source for copy in copies for source in copy if source != "."]
    assert sources, "no COPY from the build context found"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source, rules), f"COPY {source}: excluded by .dockerignore"
    # `COPY . .` feeds `pip install .`: the project, its readme and every package it declares must get through.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = ["pyproject.toml", pyproject["project"]["readme"], "migrations/0001_init.sql"]
    needed += [
        f"{glob.rstrip('*')}/__init__.py" for glob in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for path in needed:
        assert not ignored(path, rules), f"{path} is excluded from the build context"


def test_the_ignore_matcher_can_tell_the_difference() -> None:
    rules = [(False, re.compile("[^/]*")), (True, re.compile("shared")), (False, re.compile("(?:.*/)?tests"))]
    assert ignored("Makefile", rules)
    assert not ignored("shared/settings.py", rules)
    assert ignored("shared/tests/test_x.py", rules)


# --- runtime lock ------------------------------------------------------------------


def pins(path: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", path.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]).lower() for r in requirements}


def test_runtime_lock_has_every_runtime_dependency_and_no_dev_tool() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = pins(REPO / "requirements-runtime.lock")
    missing = requirement_names(project["dependencies"]) - runtime.keys()
    assert not missing, f"requirements-runtime.lock is stale, missing {missing}; regenerate it (see its header)"
    dev_only = requirement_names(project["optional-dependencies"]["dev"]) - requirement_names(project["dependencies"])
    # A package the tests name directly (h11) may also be what a runtime library needs; only one that nothing
    # at runtime pulls in is a dev tool that leaked into the image.
    needed_at_runtime = {name for name, via in pulled_in_by(REPO / "requirements-runtime.lock").items() if via}
    leaked = (dev_only & runtime.keys()) - needed_at_runtime
    assert not leaked, f"dev tools in the image: {leaked}"


def pulled_in_by(path: Path) -> dict[str, set[str]]:
    """Each pinned package and the packages its `# via` block names (the constraint file does not count)."""
    found: dict[str, set[str]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if pin := re.match(r"^([A-Za-z0-9_.\-]+)==", line):
            current = re.sub(r"[-_.]+", "-", pin.group(1)).lower()
            found[current] = set()
        elif current and (via := re.match(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9_.\-]+)\s*$", line)):
            if via.group(1) != "via":
                found[current].add(re.sub(r"[-_.]+", "-", via.group(1)).lower())
    return found


def test_the_via_reader_tells_a_runtime_need_from_the_constraint_file() -> None:
    via = pulled_in_by(REPO / "requirements-runtime.lock")
    assert "aiohttp" in via["yarl"]
    assert not via["structlog"], "only Conduit itself (not a runtime library) asks for structlog"
    assert via["h11"], "h11 should be pulled in by a runtime library"


def test_runtime_lock_pins_the_same_versions_as_the_dev_lock() -> None:
    runtime = pins(REPO / "requirements-runtime.lock")
    development = pins(REPO / "requirements.lock")
    drift = {
        name: (version, development.get(name)) for name, version in runtime.items() if development.get(name) != version
    }
    assert not drift, f"image and tests would run different versions (runtime, dev): {drift}"


def test_runtime_lock_is_hash_pinned() -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", (REPO / "requirements-runtime.lock").read_text())
    unhashed = [entry.split()[0] for entry in entries if "==" in entry.split("\n")[0] and "--hash=sha256:" not in entry]
    assert not unhashed


def test_runtime_lock_header_is_the_documented_command() -> None:
    header = (REPO / "requirements-runtime.lock").read_text().splitlines()[1].lstrip("# ").strip()
    documented = (REPO / "docs" / "deployment.md").read_text()
    assert f".venv/bin/{header}" in documented, "docs/deployment.md and the lock disagree on how to regenerate it"
    assert "--generate-hashes" in header and "-c requirements.lock" in header
