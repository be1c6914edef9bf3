package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/dxtra-ai/dxtra-proxy/metrics"
	"github.com/dxtra-ai/dxtra-proxy/proxy"
	"github.com/dxtra-ai/dxtra-proxy/tokencache"
)

// Server limits: slow or oversized clients must not hold the proxy.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
	authTimeout       = 30 * time.Second // one exchange with the auth service
)

// newLogger builds the root logger from DXTRA_LOG_LEVEL and DXTRA_LOG_FORMAT.
func newLogger(cfg *config, w io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, configErrorf("DXTRA_LOG_LEVEL: must be debug, info, warn or error")
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	enc := zapcore.NewJSONEncoder(ec)
	if cfg.LogFormat == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	ws := zapcore.Lock(zapcore.AddSync(w))
	return zap.New(zapcore.NewCore(enc, ws, level), zap.ErrorOutput(ws)), nil
}

// newAuthTransport is the transport for the auth service: same proxy and CA
// settings as the upstream's.
func newAuthTransport(cfg *config) (http.RoundTripper, error) {
	tr, err := proxy.NewTransport(proxy.TransportOptions{ResponseHeaderTimeout: authTimeout, CAFile: cfg.CAFile})
	if err != nil {
		return nil, configErrorf("DXTRA_CA_FILE: %v", err)
	}
	return tr, nil
}

// tokenSource adapts *tokencache.Cache to proxy.TokenSource, so that neither
// package imports the other.
type tokenSource struct{ c *tokencache.Cache }

func (s tokenSource) Token(ctx context.Context) (string, time.Time, error) {
	t, err := s.c.Token(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	return t.Value.Reveal(), t.UsableUntil, nil
}

func (s tokenSource) Renew(ctx context.Context, rejected string) (string, time.Time, error) {
	t, err := s.c.Renew(ctx, rejected)
	if err != nil {
		return "", time.Time{}, err
	}
	return t.Value.Reveal(), t.UsableUntil, nil
}

func (s tokenSource) Changed() <-chan struct{} { return s.c.Changed() }

// listen opens a TCP listener, or a Unix socket for "unix:/path". A stale
// socket file left by a previous run is replaced; a live one is an error.
func listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another process is serving this socket", addr)
		}
		_ = os.Remove(path)
	}
	return net.Listen("unix", path)
}

// inflight counts requests between arrival and response, so that shutdown can
// say how many it had to cut.
type inflight struct {
	n    atomic.Int64
	next http.Handler
}

func (f *inflight) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.n.Add(1)
	defer f.n.Add(-1)
	f.next.ServeHTTP(w, r)
}

// freshConns tracks connections that were accepted but have not delivered a
// request yet (http.StateNew). net/http drops a request it reads once Shutdown
// has begun, so shutdown closes the listener first and lets these connections
// deliver theirs before it calls Shutdown. Safe for concurrent use; on the
// request path it costs one atomic load per connection state change.
type freshConns struct {
	n     atomic.Int64
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	none  chan struct{} // closed when n drops to 0, if someone waits
}

// connState is the http.Server ConnState hook.
func (f *freshConns) connState(c net.Conn, s http.ConnState) {
	if s != http.StateNew && f.n.Load() == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s == http.StateNew {
		if f.conns == nil {
			f.conns = make(map[net.Conn]struct{})
		}
		f.conns[c] = struct{}{}
		f.n.Add(1)
		return
	}
	if _, ok := f.conns[c]; !ok {
		return
	}
	delete(f.conns, c)
	if f.n.Add(-1) == 0 && f.none != nil {
		close(f.none)
		f.none = nil
	}
}

// wait returns once no accepted connection is still waiting to deliver its
// first request, or after max (a client that connected and sent nothing, such
// as a browser's preconnect, must not hold shutdown up), or when ctx ends.
// Call it only after the listener is closed: no new connection arrives then.
func (f *freshConns) wait(ctx context.Context, max time.Duration) {
	f.mu.Lock()
	if f.n.Load() == 0 {
		f.mu.Unlock()
		return
	}
	if f.none == nil {
		f.none = make(chan struct{})
	}
	none := f.none
	f.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-none:
	case <-t.C:
	case <-ctx.Done():
	}
}

// freshConnGrace bounds how long shutdown waits for connections accepted just
// before the listener closed to deliver their first request.
const freshConnGrace = time.Second

// program is one running proxy: listeners, token cache and shutdown state.
type program struct {
	cfg      *config
	log      *zap.Logger
	pats     *patSource
	cache    *tokencache.Cache
	metrics  *metrics.Metrics
	handler  *proxy.Handler
	inflight *inflight
	fresh    freshConns

	proxySrv, adminSrv *http.Server
	proxyLn, adminLn   net.Listener

	shuttingDown atomic.Bool
	quitOnce     sync.Once
	quit         chan struct{} // closed by POST /quitquitquit
}

// serve runs the proxy until ctx ends (SIGTERM/SIGINT) or /quitquitquit, then
// shuts down as SPEC behaviour 10 describes. started, if non-nil, is called
// with the proxy listener's address once both listeners are open.
func serve(ctx context.Context, cfg *config, log *zap.Logger, started func(net.Addr)) error {
	p, err := newProgram(cfg, log)
	if err != nil {
		return err
	}
	if started != nil {
		started(p.proxyLn.Addr())
	}
	return p.run(ctx)
}

func newProgram(cfg *config, log *zap.Logger) (*program, error) {
	p := &program{cfg: cfg, log: log, quit: make(chan struct{})}
	var err error
	if p.pats, err = newPATSource(cfg); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	p.metrics = metrics.New(reg, metrics.BuildInfo{Version: version, Commit: commit, GoVersion: runtime.Version()})

	authTransport, err := newAuthTransport(cfg)
	if err != nil {
		return nil, err
	}
	p.cache, err = tokencache.New(tokencache.Options{
		PAT:           p.pats.PAT,
		Exchanger:     &tokencache.HTTPExchanger{BaseURL: cfg.authBase, Client: &http.Client{Transport: authTransport, Timeout: authTimeout}},
		RefreshBefore: cfg.RefreshBefore,
		Role:          cfg.Role,
		Logger:        log,
		OnRenewal:     p.metrics.ObserveRenewal,
		OnToken:       func(t tokencache.Token) { p.metrics.SetTokenExpiry(t.Expiry) },
		OnReady:       func(ready bool) { p.metrics.SetReady(ready && !p.shuttingDown.Load()) },
	})
	if err != nil {
		return nil, fmt.Errorf("token cache: %w", err)
	}

	upstream, err := proxy.NewTransport(proxy.TransportOptions{ResponseHeaderTimeout: cfg.UpstreamTimeout, CAFile: cfg.CAFile})
	if err != nil {
		return nil, configErrorf("DXTRA_CA_FILE: %v", err)
	}
	p.handler, err = proxy.New(proxy.Options{
		Upstream:       cfg.apiURL,
		Tokens:         tokenSource{p.cache},
		Role:           cfg.Role,
		AllowedRoles:   cfg.allowedRoles,
		AllowedHosts:   cfg.allowedHosts,
		AllowedOrigins: cfg.allowedOrigins,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		Transport:      upstream,
		Logger:         log,
		OnRetry:        p.metrics.ObserveRetry,
		OnWebSocket:    p.metrics.AddWebSocket,
		OnRequestDone:  accessLog(log.Named("access")),
	})
	if err != nil {
		return nil, configErrorf("proxy: %v", err)
	}
	p.inflight = &inflight{next: p.handler}

	errLog := zap.NewStdLog(log.Named("http"))
	p.proxySrv = &http.Server{
		Handler: p.metrics.Middleware(p.inflight),
		// "OPTIONS *" reaches the handler, which refuses it like any request
		// that does not name a path, instead of net/http answering 200 itself.
		DisableGeneralOptionsHandler: true,
		ConnState:                    p.fresh.connState,
		ReadHeaderTimeout:            readHeaderTimeout,
		IdleTimeout:                  idleTimeout,
		MaxHeaderBytes:               maxHeaderBytes,
		ErrorLog:                     errLog,
	}
	p.adminSrv = &http.Server{
		Handler:           p.adminRouter(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errLog,
	}
	if p.proxyLn, err = listen(cfg.ListenAddr); err != nil {
		return nil, fmt.Errorf("DXTRA_LISTEN_ADDR: %w", err)
	}
	if p.adminLn, err = listen(cfg.AdminAddr); err != nil {
		p.proxyLn.Close()
		return nil, fmt.Errorf("DXTRA_ADMIN_ADDR: %w", err)
	}
	return p, nil
}

func (p *program) run(ctx context.Context) error {
	p.log.Info("dxtra-proxy starting",
		zap.String("version", version),
		zap.String("listen", p.proxyLn.Addr().String()),
		zap.String("admin", p.adminLn.Addr().String()),
		zap.String("upstream", p.cfg.apiURL.String()),
		zap.String("auth", p.cfg.authBase),
		zap.String("role", p.cfg.Role),
	)
	// The token loop and the PAT watch outlive the listeners: they stop only
	// after draining, so requests still in flight keep getting tokens.
	loopCtx, stopLoop := context.WithCancel(context.Background())
	defer stopLoop()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.cache.Run(loopCtx) })
	g.Go(func() error { return p.pats.watch(loopCtx, patPollInterval, p.log.Named("pat"), p.cache.PATChanged) })
	g.Go(func() error {
		err := serveListener(p.proxySrv, p.proxyLn, "DXTRA_LISTEN_ADDR")
		if errors.Is(err, net.ErrClosed) && p.shuttingDown.Load() {
			return nil // shutdown closed the listener itself (see shutdown)
		}
		return err
	})
	g.Go(func() error { return serveListener(p.adminSrv, p.adminLn, "DXTRA_ADMIN_ADDR") })
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case <-p.quit:
		}
		p.shutdown()
		stopLoop()
		return nil
	})
	return g.Wait()
}

func serveListener(srv *http.Server, ln net.Listener, name string) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: serve: %w", name, err)
	}
	return nil
}

// shutdown: not ready at once, keep serving for SHUTDOWN_DELAY, then close the
// listener and drain in-flight requests for at most SHUTDOWN_TIMEOUT.
func (p *program) shutdown() {
	p.shuttingDown.Store(true)
	p.metrics.SetReady(false)
	p.log.Info("shutting down",
		zap.Duration("delay", p.cfg.ShutdownDelay),
		zap.Duration("timeout", p.cfg.ShutdownTimeout))
	if d := p.cfg.ShutdownDelay; d > 0 {
		t := time.NewTimer(d)
		<-t.C
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Hijacked WebSocket connections are not tracked by http.Server:
		// the handler closes them with 1001 itself.
		if err := p.handler.Shutdown(ctx); err != nil {
			p.log.Warn("closing websockets", zap.Error(err))
		}
	}()
	// Close the listener, let connections accepted before that deliver their
	// request, and only then shut down: net/http drops a request it reads
	// after Shutdown began.
	_ = p.proxyLn.Close()
	p.fresh.wait(ctx, freshConnGrace)
	if err := p.proxySrv.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
		p.log.Warn("drain timed out; cutting the requests still running",
			zap.Int64("requests", p.inflight.n.Load()),
			zap.Duration("timeout", p.cfg.ShutdownTimeout))
		_ = p.proxySrv.Close()
	}
	wg.Wait()
	adminCtx, cancelAdmin := context.WithTimeout(context.Background(), time.Second)
	defer cancelAdmin()
	if err := p.adminSrv.Shutdown(adminCtx); err != nil {
		_ = p.adminSrv.Close()
	}
	p.log.Info("stopped")
}

// requestQuit starts the same shutdown as SIGTERM (POST /quitquitquit).
func (p *program) requestQuit() { p.quitOnce.Do(func() { close(p.quit) }) }

// accessLog returns the per-request hook: one debug line per request. The query
// string is left out (it may carry variables an app considers private). Below
// debug level (fixed at start-up) it returns nil, so that the proxy does no
// per-request work for it at all.
func accessLog(log *zap.Logger) func(r *http.Request, status int, retried bool, role string, d time.Duration) {
	if !log.Core().Enabled(zapcore.DebugLevel) {
		return nil
	}
	return func(r *http.Request, status int, retried bool, role string, d time.Duration) {
		if ce := log.Check(zapcore.DebugLevel, "request"); ce != nil {
			ce.Write(
				zap.String("method", r.Method),
				zap.String("path", r.URL.Path),
				zap.Int("status", status),
				zap.Duration("duration", d),
				zap.Bool("retried", retried),
				zap.String("role", role),
			)
		}
	}
}
