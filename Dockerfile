# Multi-stage build of swarmd: a Rust builder, then a small Debian runtime as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY schemas ./schemas
RUN cargo build --release --locked --bin swarmd

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 swarm
COPY --from=build /src/target/release/swarmd /usr/local/bin/swarmd
USER swarm
ENTRYPOINT ["swarmd"]
CMD ["worker"]
