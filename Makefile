# Targets for humans; CI runs .ci/run, which calls the same commands.
# The Dockerfile builds with exactly RELEASE_FLAGS and LDFLAGS (a deploy test checks it).

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
RELEASE_FLAGS := -trimpath
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build test fuzz lint check demo clean

build:
	CGO_ENABLED=0 go build $(RELEASE_FLAGS) -ldflags "$(LDFLAGS)" -o bin/dxtra-proxy ./cmd/dxtra-proxy

test:
	go test -race -shuffle=on ./... && (cd deploy && go test -race -shuffle=on ./...)

fuzz:
	.ci/fuzz

lint:
	go vet ./...
	(cd deploy && go vet ./...)
	go run $(STATICCHECK) ./...
	(cd deploy && go run $(STATICCHECK) ./...)

check: lint test fuzz

demo:
	go run ./cmd/dxtra-proxy demo

clean:
	rm -rf bin
