# syntax=docker/dockerfile:1
# waltrail: Postgres WAL (pgoutput) -> audit items in ClickHouse.
#   docker build -t waltrail .
#   docker run --rm -v $PWD/examples/docker.toml:/etc/waltrail/waltrail.toml:ro waltrail
# Secrets come from the environment: WALTRAIL_PG_PASSWORD, WALTRAIL_CLICKHOUSE_PASSWORD.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target dir between builds (BuildKit, the default builder).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -m 0755 target/release/waltrail /usr/local/bin/waltrail

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin waltrail
COPY --from=build /usr/local/bin/waltrail /usr/local/bin/waltrail
USER waltrail
# The REST API and dashboard.
EXPOSE 8080
ENTRYPOINT ["waltrail"]
CMD ["run", "--config", "/etc/waltrail/waltrail.toml"]
