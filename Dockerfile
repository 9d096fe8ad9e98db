# Builds and runs ringcast. Docker's default seccomp profile blocks the
# io_uring system calls: ringcast's default `--engine auto` then falls back
# to its tokio engine with one warning line. To run the io_uring engine,
# allow them, for example with `--security-opt seccomp=unconfined`, or a
# profile that adds io_uring_setup, io_uring_enter and io_uring_register.
#
#   docker build -t ringcast .
#   docker run --rm -p 9000:9000 -p 9100:9100 ringcast
#   docker run --rm --security-opt seccomp=unconfined -p 9000:9000 ringcast

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ringcast

FROM debian:bookworm-slim
COPY --from=build /src/target/release/ringcast /usr/local/bin/ringcast
ENV RINGCAST_LISTEN=0.0.0.0:9000 \
    RINGCAST_METRICS=0.0.0.0:9100
EXPOSE 9000 9100
USER nobody
ENTRYPOINT ["/usr/local/bin/ringcast", "serve"]
