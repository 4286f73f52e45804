# One image per foodmesh component, from one Dockerfile:
#
#   docker build --build-arg SERVICE=order -t foodmesh-order .
#   (SERVICE = order | payment | store | notification | cli)
#
# The build stage compiles one binary (protoc is vendored, so the image needs
# none); the runtime stage is distroless: glibc and CA certificates, no shell,
# no package manager, user 65532 (nonroot). The Helm chart runs these images
# with a read-only root filesystem.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
ARG SERVICE=order
WORKDIR /src
COPY . .
# The registry and target caches make rebuilds of the other components fast.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case "$SERVICE" in \
      order|payment|store|notification) bin="foodmesh-$SERVICE" ;; \
      cli) bin="foodmesh" ;; \
      *) echo "SERVICE must be order, payment, store, notification or cli" >&2; exit 1 ;; \
    esac \
    && cargo build --release --locked -p "foodmesh-$SERVICE" --bin "$bin" \
    && install -D "target/release/$bin" /out/app

FROM gcr.io/distroless/cc-debian12:nonroot
ARG SERVICE=order
LABEL org.opencontainers.image.title="foodmesh-${SERVICE}" \
      org.opencontainers.image.source="https://github.com/foodmesh/foodmesh" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/app /usr/local/bin/app
USER 65532:65532
# gRPC: health, reflection and the service (the CLI image listens on nothing).
EXPOSE 50051
# No HEALTHCHECK: Kubernetes ignores it and probes gRPC health itself (the
# chart's startup, readiness and liveness probes), and this shell-less image
# has no client to run one. Outside Kubernetes, ask the health service:
#   grpcurl -plaintext HOST:50051 grpc.health.v1.Health/Check
#checkov:skip=CKV_DOCKER_2:health is gRPC health, probed by Kubernetes (see above)
ENTRYPOINT ["/usr/local/bin/app"]
