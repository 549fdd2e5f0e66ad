# Stormwatch: `docker build -t stormwatch .` (or `docker compose build`, see
# docker-compose.yml). Slim, non-root; the config, rules and secrets come from outside.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor monitor
COPY connectors connectors
COPY rules rules
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/stormwatch \
        stormwatch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER stormwatch
WORKDIR /var/lib/stormwatch
ENV PYTHONUNBUFFERED=1
# /healthz and /metrics (run.health; the compose file binds it to the container's network)
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status != 200)"]
# SIGTERM stops it cleanly (pages fetched are committed, leases handed back)
STOPSIGNAL SIGTERM
ENTRYPOINT ["stormwatch"]
CMD ["run", "--config", "/etc/stormwatch/stormwatch.yaml"]
