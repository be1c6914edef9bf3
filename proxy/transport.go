package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// TransportOptions configures NewTransport.
type TransportOptions struct {
	// ResponseHeaderTimeout bounds the wait for the upstream's response headers
	// (DXTRA_UPSTREAM_TIMEOUT); 0 → 60 s, negative → no bound.
	ResponseHeaderTimeout time.Duration
	// CAFile names a PEM bundle of extra CAs trusted for upstream TLS, on top of the
	// system roots (DXTRA_CA_FILE); "" → system roots only.
	CAFile string
}

// DefaultResponseHeaderTimeout is DXTRA_UPSTREAM_TIMEOUT's default.
const DefaultResponseHeaderTimeout = 60 * time.Second

// NewTransport returns an *http.Transport tuned for forwarding to one upstream: many
// idle connections kept per host (the proxy talks to one host only, at the request
// rate of its app), HTTP/2 attempted for TLS upstreams, HTTPS_PROXY / NO_PROXY honoured,
// the response-header timeout and extra CAs from o, and no transparent compression so
// that bytes pass through untouched. The returned transport is safe for concurrent use.
func NewTransport(o TransportOptions) (*http.Transport, error) {
	rht := o.ResponseHeaderTimeout
	switch {
	case rht == 0:
		rht = DefaultResponseHeaderTimeout
	case rht < 0:
		rht = 0
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pool, err := loadCAFile(o.CAFile)
		if err != nil {
			return nil, err
		}
		tlsConf.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: rht,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}, nil
}

// loadCAFile returns the system roots plus the certificates in the PEM file at path.
func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ca file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("ca file: no PEM certificate found")
	}
	return pool, nil
}
