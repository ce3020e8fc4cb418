# heroku-lb as a Heroku container app (heroku.yml builds `web` from this file).
# Two stages: a Rust toolchain builds the binary; the runtime is Debian slim
# with only CA certificates, the binary and conf/, run as a non-root user.

FROM rust:1.95-slim-bookworm AS builder
# cmake and a C compiler: Pingora builds zlib-ng.
# DL3008 (pin apt package versions) is ignored on purpose, here and below:
# the base image tag pins the Debian release, and unpinned packages let a
# rebuild pick up Debian's security fixes instead of failing on a gone version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake gcc g++ make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
# Dependencies first, in their own layer: rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/heroku-lb target/release/deps/heroku_lb-* target/release/deps/libheroku_lb-* \
              target/release/.fingerprint/heroku-lb-*
# The commit for `--version`: there is no .git in the build context.
ARG SOURCE_VERSION=unknown
COPY build.rs ./
COPY src ./src
RUN SOURCE_VERSION="$SOURCE_VERSION" cargo build --release --locked

FROM debian:bookworm-slim
# Only CA certificates: TLS to *.herokuapp.com and to the Platform API.
# (DL3008 ignored as explained above.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin heroku-lb
WORKDIR /app
COPY --from=builder /build/target/release/heroku-lb /usr/local/bin/heroku-lb
COPY conf ./conf
USER 10001
# Heroku ignores EXPOSE and sets PORT; heroku-lb listens on 0.0.0.0:$PORT.
CMD ["heroku-lb", "-c", "/app/conf/pingora.yaml"]
