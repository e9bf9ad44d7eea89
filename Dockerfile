# bridge as a container: `docker build -t bridge .`
#
# Every setting is a BRIDGE_* environment variable (see `bridge --help`). The
# image listens on 0.0.0.0:8080 so that the port can be published; the bridge
# refuses a non-loopback listen address without a token, so give it
# BRIDGE_TOKEN (or BRIDGE_TOKEN_FILE), or BRIDGE_ALLOW_PUBLIC=true when the
# network in front of it is trusted:
#
#   docker run --read-only --tmpfs /tmp -p 127.0.0.1:8080:8080 \
#       -e BRIDGE_TOKEN=... -e BRIDGE_UPSTREAM=redis:6379 bridge
#
# A package index or proxy for the build: pass --build-arg PIP_INDEX_URL=...,
# PIP_EXTRA_INDEX_URL=..., HTTPS_PROXY=... (nothing is baked into the image).

# -- stage 1: build the wheels (the project's and its dependencies') ---------
FROM python:3.12-slim AS build

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1

WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that this layer stays
# cached while only the code (or the README) changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip wheel --wheel-dir /wheels -r requirements.txt
COPY README.md ./
COPY bridge ./bridge
RUN pip wheel --no-deps --wheel-dir /wheels .

# -- stage 2: the runtime image ---------------------------------------------
FROM python:3.12-slim

LABEL org.opencontainers.image.title="bridge" \
      org.opencontainers.image.description="HTTP-to-TCP line bridge daemon" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric UID/GID, so that Kubernetes' runAsNonRoot can verify it.
# /var/lib/bridge belongs to it: a volume mounted there for the spool
# (BRIDGE_SPOOL=disk, BRIDGE_SPOOL_DIR=/var/lib/bridge/spool) starts out
# writable by the bridge (Docker copies the owner into a new named volume).
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid bridge --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin bridge \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/bridge

# Only the wheel and its runtime dependencies, from stage 1, no index. The
# dependencies' own test suites are removed (about 20 MB, never imported at run
# time). The .pyc files are written now because the root filesystem is
# read-only at run time; so is Twisted's plugin cache (endpoint strings are
# parsed through plugins). The last line checks that every module imports.
COPY --from=build /wheels /wheels
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 pip install --no-cache-dir --no-index \
        --find-links /wheels bridge \
 && rm -rf /wheels \
 && site=$(python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
 && find "$site" -depth -type d \( -name test -o -name tests \) \
        \! -path "$site/pip/*" -exec rm -rf {} + \
 && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
 && python -c "import pkgutil, bridge; [__import__('bridge.' + m.name) for m in pkgutil.iter_modules(bridge.__path__) if m.name != '__main__']" \
 && bridge --version

# Logs go to stdout unbuffered. Request bodies stay in memory; /tmp is still
# the one writable place, for Python and its libraries (a volume here; use
# `--tmpfs /tmp` with docker run, an emptyDir in Kubernetes).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    BRIDGE_LISTEN=0.0.0.0:8080
VOLUME ["/tmp"]

USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM

# Liveness of the process (GET /healthz), no curl needed. Readiness (upstream
# connected) is `bridge healthcheck --ready` (config/docker-compose.yml uses it).
# The probe goes where BRIDGE_LISTEN says (its port, https for ssl:, a unix:
# socket); BRIDGE_HEALTHCHECK_URL overrides. It does not import Twisted: about
# 0.1 CPU-second per run.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bridge", "healthcheck", "--timeout", "3"]

ENTRYPOINT ["bridge"]
