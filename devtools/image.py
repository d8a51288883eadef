"""Build the Conduit image and run it for real, with Debian's buildah (no Docker daemon needed).

The Dockerfile's base images are build arguments defaulting to the public ones (Docker Hub, ghcr.io,
gcr.io); here they are made locally from packages instead, so nothing but Debian's archive and PyPI is
needed: a Debian 12 root file system from debootstrap with python3.11 (what distroless is, plus the rest
of a minimal Debian) for both stages, and a ``/uv`` image from the uv wheel the Dockerfile pins.

Containers run with ``buildah run --isolation chroot`` (this sandbox cannot start OCI runtimes: podman run
fails with ``crun: setrlimit RLIMIT_NOFILE: Operation not permitted``), on the host's network, as the
image's non-root user, with the container's root file system remounted read-only (see `Container`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = "localhost/conduit:image-test"
BASE = "localhost/conduit-debian-base:bookworm"
UV = "localhost/conduit-uv"
DEBIAN_MIRROR = os.environ.get("CONDUIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
TOOLS = ("buildah", "podman", "debootstrap")
# The host's CA bundle, for building behind a TLS-intercepting egress proxy (see the Dockerfile's SSL_CERT_FILE).
HOST_CERTS = Path("/etc/ssl/certs")


class ImageError(RuntimeError):
    """A tool is missing or a build step failed; the message has the command and its output."""


def run(command: Sequence[str], timeout: float = 900, **kwargs: object) -> str:
    """Run a command, return its stdout; raise ImageError with its output when it fails."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise ImageError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    stdout: str = done.stdout
    return stdout


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name], capture_output=True).returncode == 0


def dockerfile_arg(name: str) -> str:
    """A build argument's default in the Dockerfile, e.g. UV_IMAGE -> ghcr.io/astral-sh/uv:0.13.9."""
    found = re.search(rf"^ARG {name}=(\S+)$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    if found is None:
        raise ImageError(f"the Dockerfile has no ARG {name}=...")
    return found.group(1)


def local_bases() -> dict[str, str]:
    """Build arguments pointing at local base images, made first where they do not exist yet."""
    uv_version = dockerfile_arg("UV_IMAGE").rsplit(":", 1)[1]
    uv = f"{UV}:{uv_version}"
    if not image_exists(BASE):
        _debian_base()
    if not image_exists(uv):
        _uv_image(uv_version, uv)
    return {"UV_IMAGE": uv, "BUILD_BASE": BASE, "RUNTIME_BASE": BASE}


def _debian_base() -> None:
    with tempfile.TemporaryDirectory(prefix="conduit-debootstrap-") as work:
        rootfs = Path(work) / "rootfs"
        run(["debootstrap", "--variant=minbase", "--include=python3.11", "bookworm", str(rootfs), DEBIAN_MIRROR])
        # podman import turns a tarball into an image without running anything.
        # The with closes our end of the pipe and waits for tar (a bare Popen left the pipe to the collector).
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            run(["podman", "import", "-", BASE], stdin=tar.stdout)


def _uv_image(version: str, name: str) -> None:
    """An image holding only /uv and /uvx, as ghcr.io/astral-sh/uv does, from the wheel on PyPI."""
    with tempfile.TemporaryDirectory(prefix="conduit-uv-") as work:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        run([*pip, "-d", work, f"uv=={version}"])
        (wheel,) = Path(work).glob("uv-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for tool in ("uv", "uvx"):
                target = Path(work) / tool
                target.write_bytes(archive.read(f"uv-{version}.data/scripts/{tool}"))
                target.chmod(0o755)
        with subprocess.Popen(["tar", "-C", work, "-c", "uv", "uvx"], stdout=subprocess.PIPE) as tar:
            run(["podman", "import", "-", name], stdin=tar.stdout)


def build(tag: str = TAG, build_args: dict[str, str] | None = None, layers: bool = True, context: Path = ROOT) -> float:
    """Build the Dockerfile in `context` into `tag` with buildah; returns the seconds it took."""
    args = [f"--build-arg={key}={value}" for key, value in (build_args or {}).items()]
    if (HOST_CERTS / "ca-certificates.crt").exists():
        args += [
            f"--volume={HOST_CERTS}:/etc/ssl/host-certs:ro",
            "--build-arg=SSL_CERT_FILE=/etc/ssl/host-certs/ca-certificates.crt",
        ]
    started = time.monotonic()
    command = [
        "buildah",
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "--force-rm",
        f"--layers={str(layers).lower()}",
    ]
    run([*command, *args, "--tag", tag, str(context)], timeout=1800)
    return time.monotonic() - started


def image_size(tag: str = TAG) -> int:
    return int(run(["podman", "image", "inspect", "--format", "{{.Size}}", tag]).strip())


class Container:
    """One container from the image, its root file system remounted read-only.

    buildah run has no --read-only: the container's root is mounted (buildah mount), one writable run lets
    buildah create the files it bind-mounts over (/etc/hosts, /etc/resolv.conf, /run/.containerenv), then the
    mount is bind-remounted read-only; /tmp and /run are tmpfs. buildah 1.28 then panics (nil pointer in
    Run's cleanup, run_linux.go:346) after the command exits, so its exit status is 2 whatever the
    command's: callers judge by what the command did, never by that status.
    """

    def __init__(self, image: str, name: str, volumes: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.volumes, self.env = list(volumes), dict(env or {})
        subprocess.run(["buildah", "rm", name], capture_output=True)  # one left by an interrupted run
        self.name = run(["buildah", "from", "--name", name, image]).strip()
        self.root = Path(run(["buildah", "mount", self.name]).strip())
        # The writable run that creates the mount points (volumes included); the exit status is buildah's.
        subprocess.run(
            self.command("/usr/bin/python3.11", "-c", "pass", writable=True), capture_output=True, timeout=120
        )
        run(["mount", "--bind", str(self.root), str(self.root)])
        run(["mount", "-o", "remount,bind,ro", str(self.root)])
        self.procs: list[subprocess.Popen[bytes]] = []

    def command(self, *args: str, writable: bool = False) -> list[str]:
        options = ["--isolation", "chroot", "--user", "65532:65532"]
        if not writable:
            options += ["--mount", "type=tmpfs,destination=/tmp", "--mount", "type=tmpfs,destination=/run"]
        options += [f"--env={key}={value}" for key, value in self.env.items()]
        options += [f"--volume={volume}" for volume in self.volumes]
        return ["buildah", "run", *options, self.name, "--", *args]

    def start(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as handle:
            proc = subprocess.Popen(self.command(*args), stdout=handle, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def execute(self, *args: str, timeout: float = 300) -> tuple[int, str]:
        """Run a command to completion: its exit status (reported from inside, as buildah's is not) and output."""
        report = "import subprocess, sys; code = subprocess.call(sys.argv[1:]); print(f'exit status {code}')"
        done = subprocess.run(
            self.command("/usr/bin/python3.11", "-I", "-c", report, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        found = re.findall(r"^exit status (-?\d+)$", done.stdout, flags=re.MULTILINE)
        return (int(found[-1]) if found else -1), done.stdout

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the command itself, as a container engine's stop does, and wait for it.

        Not buildah: on SIGTERM it SIGKILLs its child ("subprocess exited on killed"), which would skip
        every graceful shutdown this is meant to show.
        """
        for proc in self.procs:
            if proc.poll() is None:
                for pid in _commands_under(proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def remove(self) -> None:
        self.stop()
        subprocess.run(["umount", str(self.root)], capture_output=True)
        subprocess.run(["buildah", "rm", self.name], capture_output=True)


def _commands_under(pid: int) -> list[int]:
    """The topmost processes below `pid` that are the commands buildah started, not its own helpers
    (buildah-chroot-runtime as root, then buildah-chroot-exec as the image's user, which execs nothing)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            try:
                helper = Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"buildah")
            except OSError:
                continue
            (frontier if helper else found).append(child)
    return found


def measure() -> dict[str, float]:
    """The figures docs/benchmarks.md keeps: every image of ours removed first, so the first build is cold."""
    for name in (TAG, BASE, f"{UV}:{dockerfile_arg('UV_IMAGE').rsplit(':', 1)[1]}"):
        subprocess.run(["podman", "rmi", "--force", name], capture_output=True)
    subprocess.run(["buildah", "rmi", "--prune"], capture_output=True)
    for cache in Path("/var/tmp").glob("buildah-cache-*"):
        shutil.rmtree(cache, ignore_errors=True)
    figures: dict[str, float] = {}
    started = time.monotonic()
    args = local_bases()
    figures["local bases (debootstrap + uv wheel), s"] = time.monotonic() - started
    figures["cold build, s"] = build(TAG, args)
    figures["warm build, nothing changed, s"] = build(TAG, args)
    with tempfile.TemporaryDirectory(prefix="conduit-context-") as copy:
        shutil.copytree(
            ROOT, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", ".run", ".git", "*_cache")
        )
        (Path(copy) / "shared" / "__init__.py").write_text("# a code change\n")
        figures["warm build, one source file changed, s"] = build(TAG, args, context=Path(copy))
    figures["image size, MB"] = image_size(TAG) / 1e6
    figures["local base image size, MB"] = image_size(BASE) / 1e6
    return figures


if __name__ == "__main__":
    for what, value in measure().items():
        print(f"{what}: {value:.1f}")
