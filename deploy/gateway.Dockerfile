# syntax=docker/dockerfile:1
# chat-gateway image. Build from the repository root:
#   docker build -f deploy/gateway.Dockerfile -t chat-gateway .
# (deploy/gateway.Dockerfile.dockerignore keeps target/ and other local state
# out of the build context; BuildKit reads it instead of a root .dockerignore.)

# ---- build --------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io registry and the target directory between
# builds, so a code change recompiles only the workspace crates. The binary is
# copied out of the cache mount, which is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-gateway \
 && install -D target/release/chat-gateway /out/chat-gateway

# ---- run ----------------------------------------------------------------
# distroless/cc: glibc, libgcc, CA certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/chat-gateway /usr/local/bin/chat-gateway
# Inside a container the node must listen on every interface; the rest of the
# configuration comes from the environment at run time (see the root README).
ENV GATEWAY_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
# Standalone mode (no REDIS_URL) keeps ./data here; nonroot owns its home.
WORKDIR /home/nonroot
USER nonroot:nonroot
EXPOSE 8080
# No shell or curl in the image: the binary probes its own /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/chat-gateway", "--healthcheck"]
# Docker's default stop timeout (10 s) is shorter than DRAIN_SECONDS (20 s):
# stop with `docker stop -t 30` (compose sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chat-gateway"]
