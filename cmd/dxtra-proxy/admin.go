package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// adminRouter serves /healthz, /readyz, /metrics and, when enabled,
// POST /quitquitquit. It does no Host check: kubelet probes use the Pod IP.
func (p *program) adminRouter() http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	r.Get("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if p.shuttingDown.Load() {
			plain(w, http.StatusServiceUnavailable, "not ready: shutting down")
			return
		}
		if ok, reason := p.cache.Ready(); !ok {
			plain(w, http.StatusServiceUnavailable, "not ready: "+reason)
			return
		}
		plain(w, http.StatusOK, "ready")
	})
	r.Method(http.MethodGet, "/metrics", p.metrics.Handler())
	if p.cfg.EnableQuit {
		r.Post("/quitquitquit", func(w http.ResponseWriter, r *http.Request) {
			// A web page could otherwise shut the proxy down from the
			// user's browser: browsers always send Origin on cross-site POSTs.
			if _, ok := r.Header["Origin"]; ok {
				plain(w, http.StatusForbidden, "refused: requests carrying Origin may not quit the proxy")
				return
			}
			plain(w, http.StatusOK, "shutting down")
			p.requestQuit()
		})
	}
	return r
}

func plain(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// healthcheck asks a running proxy's /readyz and fails unless it says ready.
// The address is DXTRA_ADMIN_ADDR, or -addr; a wildcard host is reached over
// loopback.
func healthcheck(ctx context.Context, args []string, stdout io.Writer) error {
	addr := os.Getenv("DXTRA_ADMIN_ADDR")
	if addr == "" {
		addr = "127.0.0.1:9090"
	}
	switch {
	case len(args) == 2 && (args[0] == "-addr" || args[0] == "--addr"):
		addr = args[1]
	case len(args) == 1 && strings.HasPrefix(strings.TrimLeft(args[0], "-"), "addr="):
		addr = strings.SplitN(args[0], "=", 2)[1]
	case len(args) != 0:
		return errors.New("healthcheck: usage: dxtra-proxy healthcheck [-addr host:port|unix:/path]")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()

	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	url := "http://" + probeHost(addr) + "/readyz"
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		url = "http://localhost/readyz"
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: bad address %q", addr)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %s: not reachable: %w", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s (HTTP %d)", msg, resp.StatusCode)
	}
	_, err = fmt.Fprintln(stdout, msg)
	return err
}

// probeHost turns a listen address into one to dial: 0.0.0.0 and [::] mean
// "every interface", so ask loopback.
func probeHost(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}
