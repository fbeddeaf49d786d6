# maxbridge: a Matrix appservice bridge to MAX. Multi-stage build; the runtime image holds only the binary.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits reuse the cached dependency layer.
COPY Cargo.toml Cargo.lock ./
COPY crates/maxproto/Cargo.toml crates/maxproto/Cargo.toml
COPY crates/maxsim/Cargo.toml crates/maxsim/Cargo.toml
RUN mkdir -p src crates/maxproto/src crates/maxsim/src crates/maxsim/benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs crates/maxproto/src/lib.rs crates/maxsim/src/lib.rs \
 && echo 'fn main() {}' > crates/maxsim/benches/throughput.rs \
 && cargo build --release --locked --bin maxbridge || true
COPY . .
RUN touch src/main.rs src/lib.rs crates/maxproto/src/lib.rs \
 && cargo build --release --locked --bin maxbridge \
 && strip target/release/maxbridge

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 1337 maxbridge \
 && useradd --system --uid 1337 --gid 1337 --home /data maxbridge && mkdir -p /data && chown maxbridge:maxbridge /data
COPY --from=build /src/target/release/maxbridge /usr/local/bin/maxbridge
USER maxbridge
WORKDIR /data
VOLUME /data
# The appservice port of config.yaml.example; the config written on first run listens on 0.0.0.0.
EXPOSE 29340
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s \
  CMD ["/usr/local/bin/maxbridge", "-c", "/data/config.yaml", "health"]
ENTRYPOINT ["/usr/local/bin/maxbridge"]
# First run: writes /data/config.yaml (edit it) and exits; second run: writes
# /data/registration.yaml (give it to the homeserver) and exits; then it runs.
CMD ["-c", "/data/config.yaml", "--generate-missing"]
