// Package metrics exposes dxtra-proxy's Prometheus metrics: the collectors listed in
// SPEC "Metrics" on an injected *prometheus.Registry, an HTTP middleware that counts
// requests, their duration and how many are in flight, and small observer funcs that
// cmd wires to the hooks of tokencache and proxy (neither of which imports prometheus).
//
// Every label value is drawn from a fixed set (status codes 100–599, nine HTTP methods,
// two retry reasons, two grants, two results, plus "other" where a caller could send
// anything), so no request can create an unbounded number of series, and no label ever
// carries a path, a header or a credential.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "dxtra_proxy"

// Label values used by the observer funcs. They mirror the strings tokencache and
// proxy pass to their hooks.
const (
	GrantPAT          = "pat"           // GrantPAT is the grant of a /signin/pat exchange.
	GrantRefreshToken = "refresh_token" // GrantRefreshToken is the grant of a /token refresh.

	ReasonUnauthorized = "unauthorized" // ReasonUnauthorized: the upstream answered HTTP 401.
	ReasonInvalidJWT   = "invalid_jwt"  // ReasonInvalidJWT: the upstream answered an invalid-jwt error.
)

// DurationBuckets are the upper bounds, in seconds, of
// dxtra_proxy_request_duration_seconds: from half a millisecond (the proxy's own answers
// on loopback) to a minute (DXTRA_UPSTREAM_TIMEOUT's default). It must not be modified.
var DurationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// BuildInfo is what dxtra_proxy_build_info reports. Empty Version and Commit are
// reported as "unknown", an empty GoVersion as runtime.Version().
type BuildInfo struct {
	Version   string
	Commit    string
	GoVersion string
}

// Metrics holds the proxy's collectors. Create it with New; all its methods are safe
// for concurrent use.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	epoch   time.Time // carries a monotonic reading; request times are offsets from it

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge

	retries    [numReasons]prometheus.Counter
	renewals   [numGrants][2]prometheus.Counter // [grant][0 failure, 1 success]
	expiry     prometheus.Gauge
	ready      prometheus.Gauge
	websockets prometheus.Gauge

	// Children of requests and duration, created on first use and then read without
	// locks or label hashing: the middleware's hot path.
	reqCells [numMethods][numCodes]atomic.Pointer[prometheus.Counter]
	durCells [numCodes]atomic.Pointer[prometheus.Observer]
}

const (
	reasonUnauthorized = iota
	reasonInvalidJWT
	numReasons
)

const (
	grantPAT = iota
	grantRefreshToken
	numGrants
)

// New creates the metrics and registers them, with the Go and process collectors, on
// reg (nil means a fresh registry). Counters whose label values are known in advance
// (retries, renewals) start at 0 so that alerts and rate() see them before the first
// event. New panics if reg already holds any of these collectors.
func New(reg *prometheus.Registry, info BuildInfo) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{reg: reg, epoch: time.Now()}

	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "requests_total",
		Help:      "Requests served on the proxy listener, by HTTP status code and method (method outside the standard set is \"other\").",
	}, []string{"code", "method"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "request_duration_seconds",
		Help:      "Time from a request's arrival on the proxy listener until its handler returned, by HTTP status code.",
		Buckets:   DurationBuckets,
	}, []string{"code"})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "inflight_requests",
		Help:      "Requests currently being served on the proxy listener (open WebSocket connections included).",
	})
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "upstream_retries_total",
		Help:      "Requests retried once with a renewed token after the upstream rejected the token, by reason.",
	}, []string{"reason"})
	m.retries[reasonUnauthorized] = retries.WithLabelValues(ReasonUnauthorized)
	m.retries[reasonInvalidJWT] = retries.WithLabelValues(ReasonInvalidJWT)
	renewals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "token_renewals_total",
		Help:      "Token exchange attempts at the auth service, by grant (pat, refresh_token) and result (success, failure).",
	}, []string{"grant", "result"})
	for g, grant := range [numGrants]string{GrantPAT, GrantRefreshToken} {
		m.renewals[g][0] = renewals.WithLabelValues(grant, "failure")
		m.renewals[g][1] = renewals.WithLabelValues(grant, "success")
	}
	m.expiry = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "token_expiry_timestamp_seconds",
		Help:      "Expiry of the access token currently held, in Unix seconds; 0 before the first token.",
	})
	m.ready = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "ready",
		Help:      "1 while the proxy is ready (a valid token for DXTRA_ROLE is held), else 0; /readyz says why.",
	})
	m.websockets = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "websocket_connections",
		Help:      "WebSocket connections currently proxied.",
	})
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "build_info",
		Help:      "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{
			"version":   orDefault(info.Version, "unknown"),
			"commit":    orDefault(info.Commit, "unknown"),
			"goversion": orDefault(info.GoVersion, runtime.Version()),
		},
	})
	buildInfo.Set(1)

	reg.MustRegister(
		m.requests, m.duration, m.inflight, retries, renewals,
		m.expiry, m.ready, m.websockets, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	})
	return m
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Handler returns the /metrics handler: the registry given to New in the Prometheus
// text exposition format. It is safe for concurrent use.
func (m *Metrics) Handler() http.Handler { return m.handler }

// ObserveRenewal counts one token exchange attempt: grant is "pat" or "refresh_token"
// (any other value is ignored, keeping the series bounded), ok whether it yielded a
// token. It matches tokencache.Options.OnRenewal and is safe for concurrent use.
func (m *Metrics) ObserveRenewal(grant string, ok bool) {
	var g int
	switch grant {
	case GrantPAT:
		g = grantPAT
	case GrantRefreshToken:
		g = grantRefreshToken
	default:
		return
	}
	r := 0
	if ok {
		r = 1
	}
	m.renewals[g][r].Inc()
}

// SetTokenExpiry sets dxtra_proxy_token_expiry_timestamp_seconds to t in Unix seconds
// (the zero time sets 0, meaning "no token"). It is safe for concurrent use.
func (m *Metrics) SetTokenExpiry(t time.Time) {
	if t.IsZero() {
		m.expiry.Set(0)
		return
	}
	m.expiry.Set(float64(t.Unix()) + float64(t.Nanosecond())/1e9)
}

// SetReady sets dxtra_proxy_ready to 1 or 0. It matches tokencache.Options.OnReady and
// is safe for concurrent use.
func (m *Metrics) SetReady(ready bool) {
	if ready {
		m.ready.Set(1)
	} else {
		m.ready.Set(0)
	}
}

// ObserveRetry counts one request retried after the upstream rejected its token:
// reason is "unauthorized" or "invalid_jwt" (any other value is ignored). It matches
// proxy.Options.OnRetry and is safe for concurrent use.
func (m *Metrics) ObserveRetry(reason string) {
	switch reason {
	case ReasonUnauthorized:
		m.retries[reasonUnauthorized].Inc()
	case ReasonInvalidJWT:
		m.retries[reasonInvalidJWT].Inc()
	}
}

// AddWebSocket adds delta (+1 on connect, -1 on close) to
// dxtra_proxy_websocket_connections. It matches proxy.Options.OnWebSocket and is safe
// for concurrent use.
func (m *Metrics) AddWebSocket(delta int) {
	m.websockets.Add(float64(delta))
}

// codeLabels holds the decimal strings of the status codes 100–599, so that the
// middleware never formats one.
var codeLabels = func() (l [numCodes]string) {
	for i := range numCodes - 1 {
		l[i] = strconv.Itoa(i + minCode)
	}
	l[codeOther] = "other"
	return l
}()

const (
	minCode   = 100
	maxCode   = 599
	codeOther = maxCode - minCode + 1 // index of "other"
	numCodes  = codeOther + 1
)

// codeIndex maps an HTTP status to its index in codeLabels.
func codeIndex(status int) int {
	if status < minCode || status > maxCode {
		return codeOther
	}
	return status - minCode
}

var methodLabels = [numMethods]string{
	http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
	http.MethodHead, http.MethodOptions, http.MethodConnect, http.MethodTrace, "other",
}

const (
	methodOther = 9
	numMethods  = 10
)

// methodIndex maps a request method (case-sensitive, as HTTP says) to its index in
// methodLabels; anything outside the standard set is "other".
func methodIndex(method string) int {
	switch method {
	case http.MethodGet:
		return 0
	case http.MethodPost:
		return 1
	case http.MethodPut:
		return 2
	case http.MethodPatch:
		return 3
	case http.MethodDelete:
		return 4
	case http.MethodHead:
		return 5
	case http.MethodOptions:
		return 6
	case http.MethodConnect:
		return 7
	case http.MethodTrace:
		return 8
	}
	return methodOther
}
