# koogate: a multi-stage build. cargo-chef caches the dependency build in its own
# layer, so a change to koogate's sources rebuilds only koogate.
FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin koogate

# The runtime: CA certificates for the open APIs' TLS verification, and nothing else.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/koogate --create-home koogate
COPY --from=builder /build/target/release/koogate /usr/local/bin/koogate
USER koogate
WORKDIR /var/lib/koogate
ENV KOOGATE_LISTEN=0.0.0.0:8080 \
    KOOGATE_DATABASE_URL=sqlite:///var/lib/koogate/koogate.db \
    KOOGATE_LOG_FORMAT=json
VOLUME ["/var/lib/koogate"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 CMD ["koogate", "healthcheck"]
ENTRYPOINT ["koogate"]
CMD ["serve"]
