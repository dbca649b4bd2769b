# Multi-stage build of swarmd: a Rust builder, then a small Debian runtime as a non-root user.
#   docker build -t swarmd .
# Dependencies are built in their own layer, so a source change rebuilds only the crate.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin swarmd \
    && rm -rf src
COPY src ./src
COPY schemas ./schemas
# The placeholder build left a newer artifact; make sure the real sources win.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin swarmd \
    && strip target/release/swarmd

FROM debian:bookworm-slim
# ca-certificates: TLS to managed NATS, PostgreSQL and Redis; wget: Compose health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home swarm
COPY --from=build /src/target/release/swarmd /usr/local/bin/swarmd
USER 10001:10001
# Worker metrics, /ready and /scale; the API.
EXPOSE 9464 8080
ENTRYPOINT ["swarmd"]
CMD ["worker"]
