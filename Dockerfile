# syntax=docker/dockerfile:1.7
#
# One image for every Conduit process; the command picks the service:
#   docker run IMAGE proxy | importer | scheduler | console | migrate | demo-api
# (`worker`, the importer's name before this release, still starts it and logs a deprecation warning.)
#
# Runtime base: distroless Python 3.11 on Debian 12 (no shell, no package manager,
# no compilers), the smallest base that runs the manylinux wheels Conduit depends on.
# Release builds should pin both bases by digest (@sha256:...) and let a bot bump them.

# The three base images are build arguments whose defaults are what users build from; the
# image test (`make image-test`) passes local ones made from Debian's packages instead:
# a /uv binary from the uv wheel, and a debootstrapped Debian 12 with python3.11 for both
# stages (distroless is that Python on Debian 12, without the rest).
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9
ARG BUILD_BASE=debian:12-slim
ARG RUNTIME_BASE=gcr.io/distroless/python3-debian12:nonroot

# uv resolves and installs far faster than pip and creates the venv without pip in it.
FROM ${UV_IMAGE} AS uv

# Build stage: Debian 12 with the same /usr/bin/python3.11 as the runtime base, so the
# virtual environment's interpreter link still resolves once it is copied over.
FROM ${BUILD_BASE} AS build
# The debian:12 tag already fixes the release; pinning exact package versions would
# break the build every time Debian publishes a security fix for Python.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3.11 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
# Building behind a TLS-intercepting proxy: mount its CA bundle into the build and pass its path
# (--build-arg SSL_CERT_FILE=...), which uv then trusts. Unset: uv's own root certificates.
ARG SSL_CERT_FILE
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/opt/venv/bin/python
RUN uv venv --python /usr/bin/python3.11 /opt/venv

WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes, not on every code edit.
# requirements-runtime.lock is hash-pinned and holds no dev tools (pytest, ruff, helm...).
COPY requirements-runtime.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --require-hashes --no-deps --requirement requirements-runtime.lock
# .dockerignore lets in only the package sources, pyproject.toml, README.md and migrations/.
COPY . .
# Bytecode is compiled here because the root filesystem is read-only at runtime.
# migrations/ (plain SQL, not package data) is created if it does not exist yet so the copy below never fails.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --no-deps . \
 && mkdir -p migrations

# Runtime stage: only the interpreter, the virtual environment and the SQL migrations.
FROM ${RUNTIME_BASE} AS runtime
# The venv first on PATH serves `docker exec`/`kubectl exec` users; entrypoint and checks use absolute paths.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/migrations /app/migrations
COPY deploy/healthcheck.py /app/healthcheck.py
WORKDIR /app
# 65532 is distroless's "nonroot"; numeric so Kubernetes can verify runAsNonRoot.
USER 65532:65532
# proxy, importer metrics, scheduler metrics, demo third party
EXPOSE 8080 8081 8082 8090
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/bin/python3.11", "-I", "/app/healthcheck.py"]
ENTRYPOINT ["/opt/venv/bin/conduit"]
CMD ["proxy"]
