# syntax=docker/dockerfile:1
# Build stage: durable-rules is source-only on PyPI, so it is compiled here into a wheel, with every other wheel.
FROM python:3.11-slim-bookworm AS build
# Compilers come from the distribution's current security release; pinning their Debian revisions would break
# the build at every point release, and none of them reaches the runtime stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: slim, no compilers, non-root, read-only root filesystem (only /tmp writable).
FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    OLIGOCDS_HOST=0.0.0.0 OLIGOCDS_PORT=8080 \
    OLIGOCDS_STORE_URL=sqlite:////tmp/oligocds.db
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links=/wheels /wheels/oligocds-*.whl \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --no-create-home oligocds
USER 10001
EXPOSE 8080
ENTRYPOINT ["oligocds"]
CMD ["serve"]
