"""The two nginx roles of the proxy bench: the static upstream, and the baseline reverse proxy."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench._procs import Service, pinned
from devtools.pki import Pki

# Where Debian puts it; /usr/sbin is not on every user's PATH.
_CANDIDATES = ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

_COMMON = """
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 8192; }}
"""

_TEMP_PATHS = """
    client_body_temp_path {dir}/tmp/{name}-body;
    proxy_temp_path {dir}/tmp/{name}-proxy;
    fastcgi_temp_path {dir}/tmp/{name}-fastcgi;
    uwsgi_temp_path {dir}/tmp/{name}-uwsgi;
    scgi_temp_path {dir}/tmp/{name}-scgi;
"""

# Fast enough never to be the bottleneck: static files, sendfile, no log.
_UPSTREAM = """
worker_processes 1;
{common}
http {{
    {temp}
    access_log off;
    default_type application/json;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096 {tls};
        {certificate}
        root {dir}/www;
    }}
}}
"""

# What the proxy is compared with: proxy_pass adding a fixed Authorization header,
# access log on (as the proxy's), keep-alive to the upstream, bounded buffers (no temp files).
_BASELINE = """
worker_processes {workers};
{common}
http {{
    {temp}
    access_log {dir}/{name}-access.log;
    upstream api {{
        server 127.0.0.1:{upstream_port};
        keepalive 512;
        keepalive_requests 10000000;
    }}
    keepalive_requests 10000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096 {reuseport};
        location / {{
            proxy_pass {scheme}://api;
            {verify}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Tenant-ID "";
            proxy_set_header Authorization "Bearer {token}";
            proxy_buffer_size 16k;
            proxy_buffers 8 64k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"""


def binary() -> str | None:
    for candidate in _CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def write_files(workdir: Path, sizes: dict[str, int]) -> None:
    """The upstream's documents: /resources/<label> of each size."""
    www = workdir / "www" / "resources"
    www.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    for label, size in sizes.items():
        line = b'{"id": 42, "name": "Resource 42", "padding": "' + b"x" * 64 + b'"}\n'
        (www / label).write_bytes((line * (size // len(line) + 1))[:size])
    # nginx workers may run as nobody; they must be able to read the documents.
    for path in [workdir, *workdir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def upstream(workdir: Path, port: int, cpus: str | None, tls: Pki | None = None) -> Service:
    """The static upstream; over TLS (HTTP/1.1, session tickets on) with ``tls``."""
    conf = _UPSTREAM.format(
        common=_COMMON.format(dir=workdir, name="upstream"),
        temp=_temp(workdir, "upstream"),
        dir=workdir,
        port=port,
        tls="ssl" if tls else "",
        certificate=f"ssl_certificate {tls.cert}; ssl_certificate_key {tls.key};" if tls else "",
    )
    return _start(workdir, "upstream", conf, cpus)


def baseline(
    workdir: Path,
    port: int,
    upstream_port: int,
    workers: int,
    token: str,
    cpus: str | None,
    upstream_ca: Path | None = None,
) -> Service:
    """nginx as the proxy; with ``upstream_ca`` it speaks TLS upstream and verifies the certificate, as the proxy."""
    verify = (
        f"proxy_ssl_verify on; proxy_ssl_trusted_certificate {upstream_ca}; proxy_ssl_name 127.0.0.1; "
        "proxy_ssl_session_reuse on;"
    )
    conf = _BASELINE.format(
        scheme="https" if upstream_ca else "http",
        verify=verify if upstream_ca else "",
        common=_COMMON.format(dir=workdir, name="nginx"),
        temp=_temp(workdir, "nginx"),
        dir=workdir,
        name="nginx",
        workers=workers,
        port=port,
        upstream_port=upstream_port,
        reuseport="reuseport" if workers > 1 else "",
        token=token,
    )
    return _start(workdir, "nginx", conf, cpus)


def _temp(workdir: Path, name: str) -> str:
    return _TEMP_PATHS.format(dir=workdir, name=name)


def _start(workdir: Path, name: str, conf: str, cpus: str | None) -> Service:
    path = workdir / f"{name}.conf"
    path.write_text(conf)
    command = [binary() or "nginx", "-p", str(workdir), "-e", str(workdir / f"{name}-error.log"), "-c", str(path)]
    return Service(f"nginx ({name})", pinned(command, cpus), workdir / f"{name}.out")
