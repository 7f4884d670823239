# syntax=docker/dockerfile:1
#
# The upstream-discovery image: one static-ish Rust binary on a distroless base, running as
# UID 10101 (as Gloo's discovery pod) with nothing writable needed on the root filesystem.
#
#   docker build -t upstream-discovery:dev .
#
# tests/packaging.rs lints this file with hadolint, checks that the final `cargo build` line
# below builds a binary of the package and that ENTRYPOINT names it, and runs that line outside
# Docker (there is no Docker engine in CI) in the profile the tests are built in, so it compiles
# nothing twice.

# ---- build ---------------------------------------------------------------------------------
# Debian bookworm, like the runtime base, so the binary links against the same glibc. 1.94 is the
# oldest Rust the locked dependencies (aws-sdk-lambda 1.156) accept.
FROM rust:1.94.1-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock
# change. A stub crate stands in for the sources; its own artifacts are removed afterwards so the
# real build below cannot mistake them for up to date.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --profile dist --locked \
    && cargo clean --profile dist --locked --package upstream-discovery \
    && rm -rf src

# The sources, then the binary (target/dist/upstream-discovery): the `dist` profile of
# Cargo.toml, built lean for shipping (fat LTO, one codegen unit, stripped).
COPY src ./src
RUN cargo build --profile dist --locked --bin upstream-discovery

# ---- runtime -------------------------------------------------------------------------------
# distroless/cc: glibc, libgcc and CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/dist/upstream-discovery /usr/local/bin/upstream-discovery
# Gloo's discovery runs as 10101; the chart also sets runAsNonRoot and readOnlyRootFilesystem.
USER 10101:10101
# /metrics, /healthz, /readyz (--metrics-addr).
EXPOSE 9091
ENTRYPOINT ["/usr/local/bin/upstream-discovery"]
CMD ["run"]
