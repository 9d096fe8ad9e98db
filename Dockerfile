# The ringcast server, built from this checkout. Works with docker and
# podman alike (podman needs `--format docker` to keep the HEALTHCHECK).
#
#   docker build -t ringcast --build-arg REVISION=$(git rev-parse --short=12 HEAD) .
#   docker run --rm -p 9000:9000 -p 9002:9002 ringcast
#
# Clients connect to port 9000; /metrics, /healthz, /readyz and /clients
# are on 9002. Options go in RINGCAST_* variables (`-e RINGCAST_WS=0.0.0.0:9001
# -p 9001:9001` adds WebSocket clients and the chat page) or after `serve`
# (`docker run --rm ringcast serve --help` lists them); `docker run --rm
# ringcast --version` names the version and the commit.
#
# io_uring: the default seccomp profiles of docker (25 and later) and podman
# block its system calls, so `--engine auto` (the default) runs the tokio
# engine, with one warning line. To run the io_uring engine, allow them: with
# `--security-opt seccomp=unconfined`, or a profile that adds
# io_uring_setup, io_uring_enter and io_uring_register to the default one.
#
# The health check runs `ringcast probe`, which asks /readyz on the
# RINGCAST_METRICS address: keep metrics on when overriding it.
#
# BUILD_IMAGE and RUNTIME_IMAGE name the base images; .ci/image builds
# local stand-ins for them where no registry is reachable.

ARG BUILD_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
# Named in `ringcast --version` and ringcast_build_info: the build has no
# .git to ask (see .dockerignore).
ARG REVISION=unknown
WORKDIR /src
COPY . .
# The target directory is a cache shared between builds; the binary is
# copied out of it.
RUN --mount=type=cache,target=/src/target,id=ringcast-target \
    RINGCAST_COMMIT="${REVISION}" cargo build --release --locked --bin ringcast \
    && cp target/release/ringcast /usr/local/bin/ringcast

FROM ${RUNTIME_IMAGE}
ARG REVISION=unknown
ARG VERSION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="ringcast" \
      org.opencontainers.image.description="Line-broadcast TCP and WebSocket server: io_uring, one runtime per core, with a tokio fallback" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
RUN groupadd --gid 10001 ringcast \
    && useradd --uid 10001 --gid ringcast --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin ringcast
COPY --from=build /usr/local/bin/ringcast /usr/local/bin/ringcast
ENV RINGCAST_LISTEN=0.0.0.0:9000 \
    RINGCAST_METRICS=0.0.0.0:9002
EXPOSE 9000 9002
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/ringcast", "probe"]
ENTRYPOINT ["/usr/local/bin/ringcast"]
CMD ["serve"]
