# The CDS Hooks service image: gunicorn (via `cds-hooks serve`) as a non-root user.
#   docker build -t cds-hooks-antispasticity .
#   docker run -p 8080:8080 -e CDS_AUTH_ISSUERS=/config/issuers.json -e CDS_PUBLIC_BASE_URL=https://cds.example.org ... cds-hooks-antispasticity
# Without JWT issuers the service refuses to listen on 0.0.0.0 (docs/security.md); the compose
# sandbox passes --allow-unauthenticated explicitly. See docs/integration.md.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore admits only what the wheel needs (no .venv, var/, tests, secrets).
COPY . .
# The postgres extra: the PostgreSQL driver (psycopg), for DATABASE_URL=postgresql+psycopg://...
RUN pip wheel --wheel-dir /wheels '.[postgres]'

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CDS_DATA_DIR=/var/lib/cds-hooks \
    CDS_FIXTURES_DIR=/app/fhir_fixtures \
    PROMETHEUS_MULTIPROC_DIR=/tmp/cds-hooks-metrics
# A fixed uid so volume ownership is predictable (and not 0).
RUN groupadd --system --gid 10001 cds \
 && useradd --system --uid 10001 --gid cds --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin cds
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels 'cds-hooks-antispasticity[postgres]' && rm -rf /wheels
# Fixtures: for the /preview page and `cds-hooks load-fixtures` (read-only, owned by root).
COPY fhir_fixtures /app/fhir_fixtures
# The feedback/audit store (SQLite) lives in a volume; metrics files of the gunicorn workers in /tmp
# (`cds-hooks serve` clears them at start).
RUN mkdir -p /var/lib/cds-hooks /tmp/cds-hooks-metrics \
 && chown cds:cds /var/lib/cds-hooks /tmp/cds-hooks-metrics
VOLUME ["/var/lib/cds-hooks"]
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2); sys.exit(0 if r.status == 200 else 1)"]
CMD ["cds-hooks", "serve", "--host", "0.0.0.0", "--port", "8080"]
