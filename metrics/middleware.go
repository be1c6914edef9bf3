package metrics

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Middleware wraps next so that every request it serves is counted in
// dxtra_proxy_requests_total{code,method}, timed in
// dxtra_proxy_request_duration_seconds{code} and held in
// dxtra_proxy_inflight_requests while it runs.
//
// The status is the first final status the handler writes (1xx informational answers
// other than 101 are passed on and not counted); 200 when it writes a body or flushes
// without one, or writes nothing at all; 101 when it hijacks the connection without
// writing one (a protocol switch, as httputil.ReverseProxy does for WebSocket); 500
// when it panics before writing one (the request is still counted, and the panic goes
// on up — http.ErrAbortHandler included). Statuses outside 100–599 and methods outside
// the standard nine are labelled "other".
//
// The ResponseWriter handed to next keeps http.Flusher, http.Hijacker (when the
// underlying writer has it) and, through Unwrap, everything http.ResponseController
// offers. The returned handler is safe for concurrent use.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Since(m.epoch) // monotonic clock only: cheaper than time.Now
		m.inflight.Inc()
		var sw *statusWriter
		var ww http.ResponseWriter
		if canHijack(w) {
			hw := &hijackWriter{statusWriter{ResponseWriter: w}}
			sw, ww = &hw.statusWriter, hw
		} else {
			sw = &statusWriter{ResponseWriter: w}
			ww = sw
		}
		defer m.observe(sw, methodIndex(r.Method), start)
		next.ServeHTTP(ww, r)
		sw.returned = true
	})
}

// observe records one finished (or panicking) request.
func (m *Metrics) observe(sw *statusWriter, mi int, start time.Duration) {
	status := sw.status
	if !sw.wrote {
		status = http.StatusOK
		if !sw.returned {
			status = http.StatusInternalServerError
		}
	}
	ci := codeIndex(status)
	m.requestCounter(mi, ci).Inc()
	m.durationObserver(ci).Observe((time.Since(m.epoch) - start).Seconds())
	m.inflight.Dec()
}

// requestCounter returns the child of requests for (method, code) indexes, creating it
// on first use. Concurrent first uses get the same child from the vector.
func (m *Metrics) requestCounter(mi, ci int) prometheus.Counter {
	p := &m.reqCells[mi][ci]
	if c := p.Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(codeLabels[ci], methodLabels[mi])
	p.Store(&c)
	return c
}

// durationObserver returns the child of duration for a code index, creating it on
// first use.
func (m *Metrics) durationObserver(ci int) prometheus.Observer {
	p := &m.durCells[ci]
	if o := p.Load(); o != nil {
		return *o
	}
	o := m.duration.WithLabelValues(codeLabels[ci])
	p.Store(&o)
	return o
}

// statusWriter records the status a handler sends. It is used by one request's
// handler goroutine only.
type statusWriter struct {
	http.ResponseWriter
	status   int
	wrote    bool // a final status is known
	returned bool // the handler returned (did not panic)
}

func (w *statusWriter) markOK() {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
}

// WriteHeader records the first final status and passes every call on.
func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200 and writes b.
func (w *statusWriter) Write(b []byte) (int, error) {
	w.markOK()
	return w.ResponseWriter.Write(b)
}

// WriteString records an implicit 200 and writes s without copying it when the
// underlying writer allows.
func (w *statusWriter) WriteString(s string) (int, error) {
	w.markOK()
	return io.WriteString(w.ResponseWriter, s)
}

// Flush implements http.Flusher; it does nothing when the underlying writer cannot
// flush (http.ResponseController then sees the error through FlushError).
func (w *statusWriter) Flush() { _ = w.FlushError() }

// FlushError flushes the underlying writer, as http.ResponseController.Flush does.
func (w *statusWriter) FlushError() error {
	var err error
	switch f := w.ResponseWriter.(type) {
	case interface{ FlushError() error }:
		err = f.FlushError()
	case http.Flusher:
		f.Flush()
	default:
		err = http.NewResponseController(w.ResponseWriter).Flush()
	}
	if err == nil {
		w.markOK() // a flush commits the headers with the default status
	}
	return err
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// hijackWriter is a statusWriter over a writer that can be hijacked.
type hijackWriter struct{ statusWriter }

// Hijack implements http.Hijacker. A connection hijacked without a status written
// counts as 101 Switching Protocols.
func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && !w.wrote {
		w.status, w.wrote = http.StatusSwitchingProtocols, true
	}
	return c, brw, err
}

// canHijack reports whether w, or a writer it unwraps to, is an http.Hijacker (the
// lookup http.ResponseController does).
func canHijack(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}
