package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// exchange is the state of one proxied request, allocated once per request. It is at
// the same time
//   - the request's context (it embeds the client's context; the retrying
//     RoundTripper finds it with Value(exchangeKey{})),
//   - the ResponseWriter handed to httputil.ReverseProxy (recording the status), and
//   - the home of the request body reader, the response sniffer and the token-wait
//     context, so that none of them needs an allocation of its own.
//
// It is used by one request's goroutines only and is never reused: net/http may still
// hold the context or the body reader after ServeHTTP returns.
type exchange struct {
	context.Context // the client's request context

	h     *Handler
	rw    http.ResponseWriter
	start time.Time

	status  int
	wrote   bool
	retried bool

	role    string   // the role stamped on the request
	roleHdr []string // shared []string{role}, never modified
	origin  string   // the caller's (allowed) Origin, "" if none

	body  []byte       // the buffered request body; nil when there is none
	first bytes.Reader // reader for the first attempt
	sniff sniffBody    // response body wrapper after sniffing
	wait  waitCtx      // bounds Token() by TokenWait
}

// exchangeKey is the context key under which an exchange finds itself.
type exchangeKey struct{}

// Value answers exchangeKey with the exchange itself.
func (ex *exchange) Value(key any) any {
	if _, ok := key.(exchangeKey); ok {
		return ex
	}
	return ex.Context.Value(key)
}

// exchangeFrom returns the exchange a request context belongs to, or nil.
func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// Header, Write, WriteHeader, FlushError and Unwrap make exchange an
// http.ResponseWriter that records the final status; http.ResponseController finds
// everything else (Hijack, deadlines) through Unwrap.
func (ex *exchange) Header() http.Header { return ex.rw.Header() }

func (ex *exchange) WriteHeader(code int) {
	if !ex.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		ex.wrote, ex.status = true, code
	}
	ex.rw.WriteHeader(code)
}

func (ex *exchange) Write(p []byte) (int, error) {
	if !ex.wrote {
		ex.wrote, ex.status = true, http.StatusOK
	}
	return ex.rw.Write(p)
}

func (ex *exchange) FlushError() error {
	if !ex.wrote {
		ex.wrote, ex.status = true, http.StatusOK
	}
	return http.NewResponseController(ex.rw).Flush()
}

func (ex *exchange) Unwrap() http.ResponseWriter { return ex.rw }

// getBody is the outgoing request's GetBody: a fresh reader over the buffered body,
// for net/http's own retries and ours.
func (ex *exchange) getBody() (io.ReadCloser, error) {
	return bodyReadCloser(ex.body), nil
}

// waitCtx bounds a wait for a token by a deadline without arming a timer unless
// someone actually waits: the token source reads its current token without touching
// the context, so on the hot path Done is never called and nothing is allocated or
// locked. The first Done call arms a timer and a watch on the parent; release stops
// both.
type waitCtx struct {
	parent   context.Context
	deadline time.Time

	armed atomic.Bool
	mu    sync.Mutex
	done  chan struct{}
	err   error
	timer *time.Timer
	stop  func() bool
}

func (c *waitCtx) init(parent context.Context, deadline time.Time) {
	c.parent, c.deadline = parent, deadline
}

func (c *waitCtx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *waitCtx) Value(key any) any { return c.parent.Value(key) }

func (c *waitCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	c.armed.Store(true)
	if err := c.parent.Err(); err != nil {
		c.fireLocked(err)
	} else if d := time.Until(c.deadline); d <= 0 {
		c.fireLocked(context.DeadlineExceeded)
	} else {
		c.timer = time.AfterFunc(d, func() { c.fire(context.DeadlineExceeded) })
		c.stop = context.AfterFunc(c.parent, func() { c.fire(c.parent.Err()) })
	}
	return c.done
}

func (c *waitCtx) Err() error {
	if !c.armed.Load() {
		if err := c.parent.Err(); err != nil {
			return err
		}
		if !time.Now().Before(c.deadline) {
			return context.DeadlineExceeded
		}
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *waitCtx) fire(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fireLocked(err)
}

func (c *waitCtx) fireLocked(err error) {
	if c.err == nil {
		c.err = err
		close(c.done)
	}
}

// release stops the timer and the parent watch if Done armed them.
func (c *waitCtx) release() {
	if !c.armed.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stop != nil {
		c.stop()
	}
	c.fireLocked(context.Canceled)
}
