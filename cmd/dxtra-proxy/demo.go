package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
	"github.com/dxtra-ai/dxtra-proxy/tokencache"
)

// demoTokenTTL is short so that renewals show up in the log within a minute.
const demoTokenTTL = 30 * time.Second

// demoQuery is the query the printed curl line sends; the fake API answers it
// from sample data.
const demoQuery = `{"query":"{ dataControllers { id title } }"}`

// demo runs the proxy against an in-process fake of the Dxtra auth service and
// GraphQL API on loopback: no credentials, no network. The PAT and URL
// variables are ignored; listener, admin, guard and log variables apply.
func demo(ctx context.Context, cfg *config, log *zap.Logger, stdout io.Writer) error {
	fake := dxtratest.NewServer(dxtratest.Options{AccessTokenTTL: demoTokenTTL})
	defer fake.Close()

	cfg.PAT, cfg.PATFile = fake.NewPAT(), ""
	cfg.authBase = fake.AuthBaseURL()
	api, err := url.Parse(fake.APIURL)
	if err != nil {
		return fmt.Errorf("demo backend: %w", err)
	}
	cfg.apiURL = api
	log.Info("demo: embedded fake Dxtra backend on loopback",
		zap.String("auth", cfg.authBase), zap.String("api", fake.APIURL),
		zap.Duration("token_ttl", demoTokenTTL))
	return serve(ctx, cfg, log, func(addr net.Addr) {
		fmt.Fprintf(stdout, "dxtra-proxy demo: proxying to an embedded fake Dxtra API; tokens live %s, so renewals show in the log.\n", demoTokenTTL)
		fmt.Fprintf(stdout, "Try:\n\n  %s\n\n", curlLine(addr))
		if addr.Network() == "tcp" {
			fmt.Fprintf(stdout, "Watch a subscription (from the repository root):\n\n  go run ./examples/subscribe -url ws://%s/v1/graphql\n\n", probeHost(addr.String()))
		}
		fmt.Fprintln(stdout, "Stop with Ctrl-C.")
	})
}

// curlLine is a ready-to-paste request for the proxy listening on addr.
func curlLine(addr net.Addr) string {
	data := "-H 'Content-Type: application/json' -d '" + demoQuery + "'"
	if addr.Network() == "unix" {
		return fmt.Sprintf("curl -s --unix-socket %s http://localhost/v1/graphql %s", addr.String(), data)
	}
	return fmt.Sprintf("curl -s http://%s/v1/graphql %s", probeHost(addr.String()), data)
}

// printToken exchanges the PAT once and prints the access token alone on a line.
func printToken(ctx context.Context, cfg *config, stdout io.Writer) error {
	if err := cfg.requirePAT(); err != nil {
		return err
	}
	pats, err := newPATSource(cfg)
	if err != nil {
		return err
	}
	pat, _ := pats.PAT()
	tr, err := newAuthTransport(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	ex := &tokencache.HTTPExchanger{BaseURL: cfg.authBase, Client: &http.Client{Transport: tr, Timeout: authTimeout}}
	sess, err := ex.ExchangePAT(ctx, pat)
	if err != nil {
		return fmt.Errorf("exchange pat at %s: %w", cfg.authBase, err)
	}
	_, err = fmt.Fprintln(stdout, strings.TrimSpace(sess.AccessToken.Reveal()))
	return err
}
