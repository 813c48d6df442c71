# syntax=docker/dockerfile:1
# publiek-coordinator: what the sector body runs to ask questions and publish releases.
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t publiek-coordinator .
#   docker run --read-only --tmpfs /tmp -p 50051:50051 \
#     -v /etc/publiek:/etc/publiek:ro -v publiek-coordinator-state:/var/lib/publiek \
#     publiek-coordinator run /etc/publiek/plans/2024-s1.toml --out /var/lib/publiek/releases/2024-s1 ...
#
# Runs as an unprivileged user (uid 10001); its state file and release store live in
# /var/lib/publiek (back them up: docs/runbook.md); plans, certificates and the CRL are read
# from /etc/publiek. Build with --build-arg EXTRAS=dashboard for publiek-coordinator serve.

FROM python:3.11.13-slim-bookworm AS build
ARG EXTRAS=""
WORKDIR /src
# The source tree without what .dockerignore leaves out (virtual environments, data, state,
# tests); pyproject.toml decides which packages are installed.
COPY . .
RUN python -m venv /opt/publiek \
    && /opt/publiek/bin/pip install --no-cache-dir --constraint constraints.txt \
       ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11.13-slim-bookworm
LABEL org.opencontainers.image.title="publiek-coordinator" \
      org.opencontainers.image.description="publiek sector coordinator: secure aggregation and releases" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 publiek \
    && useradd --system --uid 10001 --gid publiek --home-dir /var/lib/publiek \
       --no-create-home --shell /usr/sbin/nologin publiek \
    && mkdir -p /var/lib/publiek /etc/publiek \
    && chown publiek:publiek /var/lib/publiek
COPY --from=build /opt/publiek /opt/publiek
ENV PATH=/opt/publiek/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PUBLIEK_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/publiek
VOLUME ["/var/lib/publiek"]
EXPOSE 50051
# Serving: the gRPC health service answers SERVING over mutual TLS (the coordinator's own
# certificate authenticates the probe; ca init issues it for client auth too).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["publiek-coordinator", "health", "--address", "127.0.0.1:50051", \
         "--ca", "/etc/publiek/tls/ca.pem", "--cert", "/etc/publiek/tls/coordinator.pem", \
         "--key", "/etc/publiek/tls/coordinator.key", "--server-name", "coordinator"]
ENTRYPOINT ["publiek-coordinator"]
CMD ["--help"]
