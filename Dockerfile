# syntax=docker/dockerfile:1
#
# One image for every vidpipe process: the API (default command), workers
# (`vidpipe worker`), migrations (`vidpipe migrate`) and the operator CLI.
#
#   docker build -t vidpipe .
#   docker run --rm -p 8000:8000 -e VIDPIPE_DATABASE_URL=postgresql://… vidpipe
#
# ffmpeg: the imageio-ffmpeg wheel ships a static ffmpeg, which vidpipe uses when there
# is none on PATH, so no system package is needed. To use Debian's ffmpeg instead (a
# different build, other codecs, security updates from apt), build with
#   docker build --build-arg SYSTEM_FFMPEG=true -t vidpipe .
# or point VIDPIPE_FFMPEG at any ffmpeg you mount into the container.
#
# See docs/deployment.md for running the API and workers on several machines.

FROM python:3.11-slim

ARG SYSTEM_FFMPEG=false

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/vidpipe/bin:$PATH \
    VIDPIPE_HOME=/data

# tini as PID 1: forwards SIGTERM to vidpipe (workers drain on it) and reaps the
# processes vidpipe starts (ffmpeg, the local provider's detached renderers).
# DejaVu: the font the local renderer draws prompt text with (Pillow's own otherwise).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini fonts-dejavu-core \
    && if [ "$SYSTEM_FFMPEG" = "true" ]; then \
        apt-get install -y --no-install-recommends ffmpeg; \
    fi \
    && rm -rf /var/lib/apt/lists/*

# The package and its runtime dependencies only (no dev extras), at the versions of
# constraints.txt, in a virtualenv of its own.
COPY pyproject.toml constraints.txt README.md LICENSE /tmp/vidpipe-src/
COPY src /tmp/vidpipe-src/src
RUN python -m venv /opt/vidpipe \
    && cd /tmp/vidpipe-src \
    && /opt/vidpipe/bin/pip install -c constraints.txt . \
    && cd / \
    && rm -rf /tmp/vidpipe-src \
    && vidpipe version

# A fixed numeric uid, so orchestrators can check runAsNonRoot. VIDPIPE_HOME (/data)
# holds the embedded SQLite database and local files when those are used, and
# temporary downloads in every case; mount a volume there to keep it.
RUN groupadd --system --gid 10001 vidpipe \
    && useradd --system --uid 10001 --gid vidpipe --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin vidpipe \
    && mkdir -p /data \
    && chown vidpipe:vidpipe /data
USER 10001:10001
WORKDIR /data

EXPOSE 8000

# Liveness of the API process. Worker and migrate containers serve no HTTP: turn the
# check off for them (compose.yaml does).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VIDPIPE_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["tini", "--"]
# Binding 0.0.0.0 needs API keys: VIDPIPE_AUTH_DISABLED is refused on a non-loopback
# bind. Create keys with `docker run … vidpipe keys create --tenant NAME`.
CMD ["vidpipe", "api", "--host", "0.0.0.0"]
