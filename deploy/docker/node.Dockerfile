# syntax=docker/dockerfile:1
# publiek-node: what an institution runs next to its ticketing data.
#
#   docker build -f deploy/docker/node.Dockerfile -t publiek-node .      (from the repository)
#   docker run --read-only --tmpfs /tmp \
#     -v /srv/ticketing-export:/data:ro \
#     -v /etc/publiek:/etc/publiek:ro \
#     -v publiek-node-state:/var/lib/publiek \
#     publiek-node
#
# The node runs as an unprivileged user (uid 10001) and never writes outside /var/lib/publiek
# (its ledger and status file); the export is mounted read-only at /data; node.toml, the
# certificates and the CRL read-only at /etc/publiek (see deploy/config/node.toml).
# Flower is not installed: a node install stays light (docs/flower.md for the Flower runtime).

# Python 3.11 on Debian 12, pinned to a patch release; pin the digest too when you build for
# production (docs/runbook.md, "Building the images").
FROM python:3.11.13-slim-bookworm AS build
WORKDIR /src
# The source tree without what .dockerignore leaves out (virtual environments, data, state,
# tests); pyproject.toml decides which packages are installed.
COPY . .
# Every dependency at the version the project tested (constraints.txt), into a venv that the
# runtime stage copies whole.
RUN python -m venv /opt/publiek \
    && /opt/publiek/bin/pip install --no-cache-dir --constraint constraints.txt .

FROM python:3.11.13-slim-bookworm
LABEL org.opencontainers.image.title="publiek-node" \
      org.opencontainers.image.description="publiek node: answers a sector coordinator with differentially private aggregates" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 publiek \
    && useradd --system --uid 10001 --gid publiek --home-dir /var/lib/publiek \
       --no-create-home --shell /usr/sbin/nologin publiek \
    && mkdir -p /var/lib/publiek /etc/publiek /data \
    && chown publiek:publiek /var/lib/publiek
COPY --from=build /opt/publiek /opt/publiek
ENV PATH=/opt/publiek/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PUBLIEK_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/publiek
VOLUME ["/var/lib/publiek"]
# Healthy: connected to the coordinator and heard from within 45 s (publiek-node health reads
# the status file the running node keeps next to its ledger).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["publiek-node", "health", "--config", "/etc/publiek/node.toml"]
ENTRYPOINT ["publiek-node"]
CMD ["run", "--config", "/etc/publiek/node.toml"]
