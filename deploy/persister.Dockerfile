# syntax=docker/dockerfile:1
# chat-persister image. Build from the repository root:
#   docker build -f deploy/persister.Dockerfile -t chat-persister .
# (deploy/persister.Dockerfile.dockerignore keeps target/ and other local state
# out of the build context; BuildKit reads it instead of a root .dockerignore.)

# ---- build --------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Same cache mounts as the gateway image: registry and target dir survive builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-persister \
 && install -D target/release/chat-persister /out/chat-persister

# ---- run ----------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/chat-persister /usr/local/bin/chat-persister
# /healthz, /readyz and /metrics must be reachable from outside the container.
ENV PERSISTER_ADDR=0.0.0.0:9091 \
    LOG_FORMAT=json
WORKDIR /home/nonroot
USER nonroot:nonroot
EXPOSE 9091
# No shell or curl in the image: the binary probes its own /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/chat-persister", "--healthcheck"]
ENTRYPOINT ["/usr/local/bin/chat-persister"]
