# trio-gfxsync: syncs PokerGFX session files from a read-only NAS folder into Supabase.
#
# Build:   docker compose -f deploy/docker-compose.yml build      (or: docker build -t trio-gfxsync .)
# Runtime layout (fixed; deploy/docker-compose.yml relies on it):
#   /app/data    the PokerGFX share, mounted read-only (GFX_SYNC_NAS_BASE_PATH default)
#   /app/queue   the durable SQLite queue and the error folder: a named volume, owned by gfxsync
#   :8080        /health, /metrics, the dashboard (GFX_SYNC_HEALTH_PORT default)
#
# Only the classic Dockerfile syntax is used (no RUN --mount), so it also builds on the older
# Docker engine of Synology's Container Manager, with or without BuildKit.

# --- builder: the project and every dependency as wheels -------------------------------------
# The Python the tests run (scripts/test creates .venv with the machine's 3.11)
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# .dockerignore keeps the context to the sources (no .venv, no .env with the key, no tests)
COPY . .
# Every dependency is pre-built here, pinned by constraints.txt (the versions the tests ran), so
# the runtime stage installs offline (--no-index) exactly those, and needs no compiler.
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .

# --- runtime ------------------------------------------------------------------------------------
FROM python:3.11-slim

# The service runs as an unprivileged user. uid/gid 1000 by default; to read a share that only
# a given DSM user may read, build with that user's ids (`id <user>` over SSH on the NAS, DSM
# users usually start at uid 1026 in group users, gid 100): APP_UID/APP_GID in deploy/.env.
ARG APP_UID=1000
ARG APP_GID=1000

LABEL org.opencontainers.image.title="trio-gfxsync" \
      org.opencontainers.image.description="Sync PokerGFX session files from a NAS into Supabase" \
      org.opencontainers.image.licenses="MIT"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An existing group with that gid (gid 100 is Debian's "users") is reused rather than duplicated.
# A .env still holding the example's <uid>/<gid> stops the build here, saying what to do.
RUN case "${APP_UID}:${APP_GID}" in *[!0-9:]* | :* | *:) \
        echo "APP_UID/APP_GID must be numbers, not '${APP_UID}:${APP_GID}': fill them in .env (ssh to the NAS: id <user>)" >&2; \
        exit 1 ;; \
    esac \
    && if ! getent group "${APP_GID}" >/dev/null; then groupadd --gid "${APP_GID}" gfxsync; fi \
    && useradd --uid "${APP_UID}" --gid "${APP_GID}" --no-create-home --no-log-init \
       --home-dir /app --shell /usr/sbin/nologin gfxsync \
    && mkdir -p /app/data /app/queue \
    && chown "${APP_UID}:${APP_GID}" /app/queue

# The wheels are installed by path: the exact versions the builder resolved, nothing from PyPI.
COPY --from=builder /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links=/tmp/wheels /tmp/wheels/trio_gfxsync-*.whl \
    && rm -rf /tmp/wheels

WORKDIR /app
# Numeric, so the host and runAsNonRoot-style checks can resolve it; it is the gfxsync user above.
USER ${APP_UID}:${APP_GID}

# Declared after the chown: Docker copies this folder's owner into a fresh named volume, so the
# non-root user can write the queue. /app/data is a bind mount (read-only) and needs no VOLUME.
VOLUME ["/app/queue"]
EXPOSE 8080

# The agent is PID 1 and handles SIGTERM itself (graceful drain, DESIGN section 6).
STOPSIGNAL SIGTERM
# python:3.11-slim has no curl; the CLI's healthcheck GETs the local /health (exit 0 on 200).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["trio-gfxsync", "healthcheck"]

ENTRYPOINT ["trio-gfxsync"]
CMD ["run"]
