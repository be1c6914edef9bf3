# syntax=docker/dockerfile:1
#
# dxtra-proxy container image: a static binary on distroless, running as the
# numeric non-root user 65532 so that Kubernetes' runAsNonRoot admits it.
#
#   docker build \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg COMMIT="$(git rev-parse --short=12 HEAD)" \
#     -t dxtra-proxy:dev .
#
# Both listeners stay on loopback by default (the right thing for a sidecar that
# shares its Pod's network, and for HEALTHCHECK below); Kubernetes manifests and
# the compose stack open what they need through DXTRA_* variables.
# The build flags are the Makefile's RELEASE_FLAGS and LDFLAGS (deploy tests check it).

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# A go.work in the repository must not pull the deploy/ module (not in the context).
ENV GOWORK=off
# Modules in their own layer: rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/dxtra-proxy ./cmd/dxtra-proxy

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="dxtra-proxy" \
      org.opencontainers.image.description="Local authenticating reverse proxy (sidecar) for the Dxtra GraphQL API: exchanges a Personal Access Token for fresh JWTs" \
      org.opencontainers.image.source="https://github.com/dxtra-ai/dxtra-proxy" \
      org.opencontainers.image.url="https://github.com/dxtra-ai/dxtra-proxy" \
      org.opencontainers.image.vendor="Dxtra" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/dxtra-proxy /dxtra-proxy
USER 65532:65532
# 8080: proxy (DXTRA_LISTEN_ADDR), 9090: /healthz /readyz /metrics (DXTRA_ADMIN_ADDR).
EXPOSE 8080 9090
# No shell or curl in the image: the binary asks its own admin listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --start-interval=1s --retries=3 \
    CMD ["/dxtra-proxy", "healthcheck"]
ENTRYPOINT ["/dxtra-proxy"]
CMD ["serve"]
