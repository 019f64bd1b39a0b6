# One image holds every Free Agent binary; compose.yaml picks the command per service.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --locked \
 && mkdir /out \
 && cp target/release/freeagent target/release/freeagent-gateway target/release/freeagent-scheduler \
       target/release/freeagent-storage target/release/freeagent-worker /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tar gzip iproute2 nftables e2fsprogs \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 freeagent
COPY --from=build /out/ /usr/local/bin/
USER freeagent
WORKDIR /home/freeagent
ENV FREEAGENT_BIND=0.0.0.0 FREEAGENT_LOG_FORMAT=json
CMD ["freeagent", "--help"]
