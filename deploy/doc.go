// Package deploy holds no code of its own: it is the home of the tests that
// validate the deployment files beside it — the Kubernetes manifests, the
// docker-compose stack, the repository's Dockerfile and .dockerignore, the
// Prometheus alert rules and the README's deploy sections — against the real
// Kubernetes API types, the compose-spec loader, BuildKit's Dockerfile parser,
// Prometheus's rule loader and engine, the Makefile's build flags and the
// dxtra-proxy program's own -h output.
//
// It is a separate Go module so that those heavy dependencies stay out of the
// main module. Run it with `cd deploy && go test ./...`.
package deploy
