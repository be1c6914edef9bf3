package tokencache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// ErrNoToken is returned (wrapped) by Cache.Token when its context ends before a usable
// token is held, and by Cache.Renew when no usable token can be had.
var ErrNoToken = errors.New("no usable token")

// Timing constants of the renewal policy (SPEC, behaviour 5 and the wire protocol).
const (
	defaultRefreshBefore = 2 * time.Minute
	patSessionMaxAge     = 12 * time.Hour   // re-exchange the PAT when its session is this old
	terminalRetry        = 60 * time.Second // retry period after the PAT was refused
	backoffMax           = 60 * time.Second
	floor429PAT          = 30 * time.Second // after a 429 on /signin/pat
	floor429Refresh      = 5 * time.Second  // after a 429 on /token
	rejectWindow         = 10 * time.Second // at most one rejection-driven renewal per window
	exchangeTimeout      = 45 * time.Second // bounds one flight (both grants)
	maxSleep             = time.Minute      // the loop re-reads the clock at least this often
)

// Options configures a Cache; New copies it. PAT and Exchanger are required. The funcs
// (PAT, Now and the hooks) are called from several goroutines and must be safe for
// concurrent use; the hooks must not block.
type Options struct {
	PAT           func() (Secret, error) // current PAT; called whenever an exchange needs it
	Exchanger     Exchanger
	RefreshBefore time.Duration               // renew this long before expiry (clamped to half the lifetime); default 2m
	Role          string                      // DXTRA_ROLE; Ready() requires it in Token.Roles (when known)
	Now           func() time.Time            // default time.Now; checked on every read (tests inject a jumped clock)
	Logger        *zap.Logger                 // nil → no-op
	OnRenewal     func(grant string, ok bool) // every call to the auth service; grant GrantPAT | GrantRefreshToken
	OnToken       func(t Token)               // every new token (metrics: expiry gauge)
	OnReady       func(ready bool)            // readiness transitions
}

// Cache holds the current access token and keeps it fresh. All its methods are safe for
// concurrent use. Readers ([Cache.Token], [Cache.Ready], [Cache.Changed]) never block
// on the auth service while a usable token is held; at most one exchange is in flight
// at any time, shared by the background loop and [Cache.Renew]. Hooks in Options are
// called from the cache's goroutines and must not block.
type Cache struct {
	opts Options
	log  *zap.Logger
	now  func() time.Time

	snap atomic.Pointer[snapshot] // what readers see; replaced under mu
	kick chan struct{}            // wakes the loop to re-plan

	readyMu   sync.Mutex // orders OnReady calls
	lastReady bool

	mu           sync.Mutex // guards the fields below; never held across I/O or hooks
	running      bool
	runCtx       context.Context // Run's ctx while it runs: cancels flights on shutdown
	fl           *flight         // the exchange in flight, if any
	refresh      Secret          // newest refresh token; zero when none may be used
	sessionStart time.Time       // when the PAT exchange behind refresh happened
	ageDeferred  bool            // the 12 h re-exchange failed transiently: retry at the next renewal
	patGen       uint64          // bumped by PATChanged; results of older flights are dropped
	fails        int             // consecutive failed flights
	retryAt      time.Time       // no exchange before (backoff, terminal retry)
	patFloor     time.Time       // no PAT exchange before (429 / Retry-After on /signin/pat)
	terminal     error           // the PAT was refused (or unreadable); cleared by success / PATChanged
	loggedTerm   string          // terminal failure already logged at error level
	rejectAt     time.Time       // start of the last rejection-driven renewal
}

// snapshot is the immutable state readers load lock-free.
type snapshot struct {
	tok      *Token        // nil before the first token
	changed  chan struct{} // closed when tok is replaced
	failure  string        // why renewal currently fails; "" when it does not
	terminal bool          // failure is terminal: not ready whatever tok is
}

// flight is one exchange; waiters block on done, then read tok and err.
type flight struct {
	done chan struct{}
	tok  Token
	err  error
}

// patSourceError is a failure to obtain the PAT from Options.PAT.
type patSourceError struct{ err error }

func (e *patSourceError) Error() string { return "read pat: " + e.err.Error() }
func (e *patSourceError) Unwrap() error { return e.err }

// New returns a Cache. Nothing is exchanged until Run starts (or Renew is called).
func New(opts Options) (*Cache, error) {
	if opts.PAT == nil {
		return nil, errors.New("tokencache: Options.PAT is nil")
	}
	if opts.Exchanger == nil {
		return nil, errors.New("tokencache: Options.Exchanger is nil")
	}
	if opts.RefreshBefore < 0 {
		return nil, errors.New("tokencache: Options.RefreshBefore is negative")
	}
	if opts.RefreshBefore == 0 {
		opts.RefreshBefore = defaultRefreshBefore
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	c := &Cache{
		opts: opts,
		log:  opts.Logger.Named("tokencache"),
		now:  opts.Now,
		kick: make(chan struct{}, 1),
	}
	c.snap.Store(&snapshot{changed: make(chan struct{})})
	return c, nil
}

// Run is the background loop: it exchanges the PAT, then renews the token ahead of its
// expiry, backs off on failures and re-exchanges the PAT when needed. It returns nil when
// ctx ends (after the exchange in flight, if any, has been cancelled and has returned),
// or an error at once if Run is already running.
func (c *Cache) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("tokencache: Run is already running")
	}
	c.running, c.runCtx = true, ctx
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running, c.runCtx = false, nil
		fl := c.fl
		c.mu.Unlock()
		if fl != nil {
			<-fl.done
		}
	}()

	timer := time.NewTimer(maxSleep)
	defer timer.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		c.updateReady()
		now := c.now()
		act, wake := c.plan(now)
		if act {
			fl := c.start()
			select {
			case <-fl.done:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		timer.Reset(min(wake.Sub(now), maxSleep))
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-timer.C:
		}
	}
}

// Token returns the current token if it is usable now (checked against Options.Now on
// every call). Otherwise it waits — without polling — until a usable token arrives or
// ctx ends; then the error wraps ErrNoToken, the reason, and ctx's error.
func (c *Cache) Token(ctx context.Context) (Token, error) {
	for {
		s := c.snap.Load()
		if s.tok != nil && s.tok.Usable(c.now()) {
			return *s.tok, nil
		}
		c.kickLoop() // a late timer (after a sleep) must not leave us waiting
		select {
		case <-s.changed:
		case <-ctx.Done():
			_, reason := c.readiness(c.snap.Load(), c.now())
			return Token{}, fmt.Errorf("%w (%s): %w", ErrNoToken, reason, context.Cause(ctx))
		}
	}
}

// Renew is called with the raw JWT an upstream rejected. If the current token differs
// from rejected and is usable, it is returned at once. Otherwise Renew joins the
// exchange in flight or starts one (/token first, the PAT as the fallback). Renewals
// started by Renew are bounded to one per 10 s: inside that window the current token is
// returned unchanged (the caller sees Value.Reveal() == rejected and passes the upstream
// answer through). Renew returns an error when the renewal fails, when the cache is
// backing off after a failure, or when ctx ends first.
func (c *Cache) Renew(ctx context.Context, rejected string) (Token, error) {
	now := c.now()
	s := c.snap.Load()
	if s.tok != nil && s.tok.Usable(now) && s.tok.Value.Reveal() != rejected {
		return *s.tok, nil
	}
	c.mu.Lock()
	fl := c.fl
	if fl == nil {
		if !c.rejectAt.IsZero() && now.Sub(c.rejectAt) < rejectWindow && now.After(c.rejectAt.Add(-rejectWindow)) {
			c.mu.Unlock()
			if s.tok != nil && s.tok.Usable(now) {
				return *s.tok, nil
			}
			return Token{}, fmt.Errorf("renew: %w", ErrNoToken)
		}
		if err := c.heldBackLocked(now); err != nil {
			c.mu.Unlock()
			return Token{}, fmt.Errorf("renew: %w: %w", ErrNoToken, err)
		}
		c.rejectAt = now
		fl = c.startLocked()
	}
	c.mu.Unlock()
	select {
	case <-fl.done:
	case <-ctx.Done():
		return Token{}, fmt.Errorf("renew: %w", context.Cause(ctx))
	}
	if fl.err != nil {
		return Token{}, fmt.Errorf("renew: %w", fl.err)
	}
	if !fl.tok.Usable(c.now()) { // never hand out a token past its UsableUntil
		return Token{}, fmt.Errorf("renew: %w", ErrNoToken)
	}
	return fl.tok, nil
}

// heldBackLocked says why no exchange may start now, or nil.
func (c *Cache) heldBackLocked(now time.Time) error {
	switch {
	case c.terminal != nil:
		return c.terminal
	case now.Before(c.retryAt):
		return fmt.Errorf("backing off until %s", c.retryAt.Format(time.RFC3339))
	case c.refresh.IsZero() && now.Before(c.patFloor):
		return fmt.Errorf("pat exchange rate limited until %s", c.patFloor.Format(time.RFC3339))
	}
	return nil
}

// Ready reports whether a usable token is held and Options.Role is among its roles (when
// they are known). When not ready, reason says why in plain words.
func (c *Cache) Ready() (bool, string) {
	return c.readiness(c.snap.Load(), c.now())
}

func (c *Cache) readiness(s *snapshot, now time.Time) (bool, string) {
	if s.terminal {
		return false, s.failure
	}
	if s.tok == nil || !s.tok.Usable(now) {
		prefix, what := "no token yet", "exchanging the PAT"
		if s.tok != nil {
			prefix, what = "token expired", "renewing"
		}
		if s.failure != "" {
			what = s.failure
		}
		return false, prefix + "; " + what
	}
	if c.opts.Role != "" && s.tok.Roles != nil && !slices.Contains(s.tok.Roles, c.opts.Role) {
		return false, fmt.Sprintf("role %q is not among the token's allowed roles %v", c.opts.Role, s.tok.Roles)
	}
	return true, ""
}

// PATChanged tells the cache that the PAT source now returns a new PAT: the new PAT is
// exchanged at once (by the running loop), the old session is dropped without a
// sign-out, and the current token is served until it expires or the new PAT yields one.
// A terminal failure of the old PAT is forgotten; readiness follows the new PAT.
func (c *Cache) PATChanged() {
	c.mu.Lock()
	c.patGen++
	c.refresh = Secret{}
	c.sessionStart = time.Time{}
	c.ageDeferred = false
	c.fails = 0
	c.retryAt = time.Time{}
	c.terminal = nil
	c.loggedTerm = ""
	old := c.snap.Load()
	c.snap.Store(&snapshot{tok: old.tok, changed: old.changed})
	c.mu.Unlock()
	c.log.Info("pat changed; exchanging the new pat")
	c.kickLoop()
	c.updateReady()
}

// Changed returns a channel that is closed the next time the token is replaced.
func (c *Cache) Changed() <-chan struct{} {
	return c.snap.Load().changed
}

// plan decides whether the loop must exchange now, else when to look again.
func (c *Cache) plan(now time.Time) (act bool, wake time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fl != nil {
		return true, now // join it
	}
	s := c.snap.Load()
	var due time.Time
	switch {
	case c.terminal != nil:
		due = c.retryAt
	case c.refresh.IsZero() || s.tok == nil:
		due = later(c.retryAt, c.patFloor)
	default:
		due = renewAt(*s.tok, c.opts.RefreshBefore)
		if !c.sessionStart.IsZero() && !c.ageDeferred {
			if t := later(c.sessionStart.Add(patSessionMaxAge), c.patFloor); t.Before(due) {
				due = t
			}
		}
		due = later(due, c.retryAt)
	}
	if !now.Before(due) {
		return true, now
	}
	wake = due
	if s.tok != nil && now.Before(s.tok.UsableUntil) && s.tok.UsableUntil.Before(wake) {
		wake = s.tok.UsableUntil // readiness changes then
	}
	return false, wake
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (c *Cache) kickLoop() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// start joins the flight in progress or starts one.
func (c *Cache) start() *flight {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startLocked()
}

func (c *Cache) startLocked() *flight {
	if c.fl != nil {
		return c.fl
	}
	fl := &flight{done: make(chan struct{})}
	c.fl = fl
	runCtx := c.runCtx
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), exchangeTimeout)
		if runCtx != nil {
			stop := context.AfterFunc(runCtx, cancel)
			defer stop()
		}
		tok, err := c.exchange(ctx, fl)
		cancel()
		c.mu.Lock()
		c.endFlightLocked(fl)
		c.mu.Unlock()
		fl.tok, fl.err = tok, err
		c.kickLoop()
		close(fl.done)
	}()
	return fl
}

// exchange performs one flight: /token while a refresh token is held, the PAT at start,
// on refusal, after a PAT change and when the PAT session is 12 h old.
func (c *Cache) exchange(ctx context.Context, fl *flight) (Token, error) {
	now := c.now()
	c.mu.Lock()
	gen := c.patGen
	rt := c.refresh
	aged := !c.sessionStart.IsZero() && !now.Before(c.sessionStart.Add(patSessionMaxAge))
	patOK := !now.Before(c.patFloor)
	c.mu.Unlock()

	var (
		sess  *Session
		grant string
		err   error
	)
	attempt := func(g string) {
		grant = g
		if g == GrantPAT {
			sess, err = c.exchangePAT(ctx)
		} else {
			sess, err = c.opts.Exchanger.Refresh(ctx, rt)
		}
		var pse *patSourceError
		if !errors.As(err, &pse) && c.opts.OnRenewal != nil {
			c.opts.OnRenewal(g, err == nil)
		}
		if err != nil {
			c.noteFailure(gen, g, rt, err)
		}
	}
	switch {
	case (rt.IsZero() || aged) && patOK:
		attempt(GrantPAT)
		if err != nil && aged && !rt.IsZero() && !isTerminal(GrantPAT, err) && ctx.Err() == nil {
			patErr := err
			c.log.Warn("pat re-exchange failed; refreshing the old session meanwhile", zap.Error(err))
			attempt(GrantRefreshToken)
			if err != nil {
				grant, err = GrantPAT, patErr
			} else {
				c.mu.Lock()
				c.ageDeferred = true
				c.mu.Unlock()
			}
		}
	case !rt.IsZero():
		attempt(GrantRefreshToken)
		if err != nil && refusedRefresh(err) && patOK && ctx.Err() == nil {
			attempt(GrantPAT)
		}
	default:
		return Token{}, errors.New("pat exchange held back after a 429")
	}
	if err != nil {
		return c.fail(ctx, fl, gen, grant, err)
	}
	return c.succeed(fl, gen, grant, sess)
}

// endFlightLocked lets the next exchange start. It runs in the critical section that
// publishes fl's outcome, so that nobody joins a flight whose result is already out.
func (c *Cache) endFlightLocked(fl *flight) {
	if c.fl == fl {
		c.fl = nil
	}
}

func (c *Cache) exchangePAT(ctx context.Context) (*Session, error) {
	pat, err := c.opts.PAT()
	if err != nil {
		return nil, &patSourceError{err: err}
	}
	if pat.IsZero() {
		return nil, &patSourceError{err: errors.New("the pat is empty")}
	}
	return c.opts.Exchanger.ExchangePAT(ctx, pat)
}

// current returns the usable current token, or an error.
func (c *Cache) current() (Token, error) {
	if s := c.snap.Load(); s.tok != nil && s.tok.Usable(c.now()) {
		return *s.tok, nil
	}
	return Token{}, ErrNoToken
}

// refusedRefresh: /token answered a 4xx other than 429 — exchange the PAT instead.
func refusedRefresh(err error) bool {
	var ee *ExchangeError
	return errors.As(err, &ee) && ee.refused()
}

// isTerminal: the PAT itself was refused (4xx but 429) or could not be read.
func isTerminal(grant string, err error) bool {
	var pse *patSourceError
	if errors.As(err, &pse) {
		return true
	}
	var ee *ExchangeError
	return grant == GrantPAT && errors.As(err, &ee) && ee.refused()
}

// noteFailure records what one failed attempt implies beyond the flight's outcome:
// 429 floors, and a refused refresh token is never used again.
func (c *Cache) noteFailure(gen uint64, grant string, rt Secret, err error) {
	var ee *ExchangeError
	if !errors.As(err, &ee) {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.patGen {
		return
	}
	if grant == GrantPAT && ee.Status == http.StatusTooManyRequests {
		c.patFloor = later(c.patFloor, now.Add(max(floor429PAT, ee.RetryAfter)))
	}
	if grant == GrantRefreshToken && ee.refused() && c.refresh.Equal(rt) {
		c.refresh = Secret{}
		c.log.Info("refresh token refused; exchanging the pat",
			zap.Int("status", ee.Status), zap.String("error_code", ee.Code))
	}
}

// fail records a failed flight and schedules the next attempt.
func (c *Cache) fail(ctx context.Context, fl *flight, gen uint64, grant string, err error) (Token, error) {
	if errors.Is(ctx.Err(), context.Canceled) {
		return Token{}, err // Run is ending: not a failure of the auth service
	}
	now := c.now()
	terminal := isTerminal(grant, err)
	var ee *ExchangeError
	errors.As(err, &ee)

	c.mu.Lock()
	c.endFlightLocked(fl)
	if gen != c.patGen {
		c.mu.Unlock()
		return Token{}, fmt.Errorf("superseded by a pat change: %w", err)
	}
	c.fails++
	var delay time.Duration
	var failure, logKey string
	if terminal {
		delay = terminalRetry
		c.terminal = err
		c.refresh = Secret{}
		var pse *patSourceError
		switch {
		case errors.As(err, &pse):
			failure, logKey = "cannot read the PAT: "+pse.err.Error(), "pat-source"
		case ee.Code != "":
			failure, logKey = "auth service refused the PAT: "+ee.Code, ee.Code
		default:
			failure = fmt.Sprintf("auth service refused the PAT: HTTP %d", ee.Status)
			logKey = failure
		}
	} else {
		delay = backoff(c.fails)
		if ee != nil {
			if ee.Status == http.StatusTooManyRequests {
				if grant == GrantPAT {
					delay = max(delay, floor429PAT)
				} else {
					delay = max(delay, floor429Refresh)
				}
			}
			delay = max(delay, ee.RetryAfter)
		}
		failure = "auth service unreachable: " + err.Error()
		if ee != nil && ee.Status != 0 {
			failure = "auth service failing: " + err.Error()
		}
	}
	c.retryAt = now.Add(delay)
	logTerminal := terminal && c.loggedTerm != logKey
	if logTerminal {
		c.loggedTerm = logKey
	}
	old := c.snap.Load()
	c.snap.Store(&snapshot{tok: old.tok, changed: old.changed, failure: failure, terminal: terminal})
	c.mu.Unlock()

	fields := []zap.Field{zap.String("grant", grant), zap.Duration("retry_in", delay), zap.Error(err)}
	if ee != nil {
		fields = append(fields, zap.Int("status", ee.Status), zap.String("error_code", ee.Code))
	}
	switch {
	case logTerminal:
		c.log.Error("auth service refused the pat; not ready", fields...)
	case terminal:
		c.log.Debug("pat still refused", fields...)
	default:
		c.log.Warn("token renewal failed", fields...)
	}
	c.updateReady()
	return Token{}, err
}

// succeed stores the new token and the rotated refresh token.
func (c *Cache) succeed(fl *flight, gen uint64, grant string, sess *Session) (Token, error) {
	now := c.now()
	tok := newToken(sess, now)
	c.mu.Lock()
	c.endFlightLocked(fl)
	if gen != c.patGen {
		c.mu.Unlock()
		c.log.Debug("dropping a session started before the pat changed", zap.String("grant", grant))
		return c.current()
	}
	c.refresh = sess.RefreshToken
	if grant == GrantPAT {
		c.sessionStart = now
		c.ageDeferred = false
	}
	c.terminal = nil
	c.loggedTerm = ""
	var failure string
	if tok.Usable(now) {
		c.fails = 0
		c.retryAt = time.Time{}
	} else {
		// An already expired token (clocks far apart): back off instead of spinning.
		c.fails++
		c.retryAt = now.Add(backoff(c.fails))
		failure = "auth service issued an expired token (clock skew?)"
	}
	old := c.snap.Load()
	c.snap.Store(&snapshot{tok: &tok, changed: make(chan struct{}), failure: failure})
	close(old.changed)
	c.mu.Unlock()

	if failure != "" {
		c.log.Warn("auth service issued an expired token", zap.String("grant", grant),
			zap.Time("expiry", tok.Expiry), zap.Stringer("token", tok.Value))
	} else {
		c.log.Info("token renewed", zap.String("grant", grant), zap.Time("expiry", tok.Expiry),
			zap.Stringer("token", tok.Value), zap.Strings("roles", tok.Roles))
	}
	if c.opts.OnToken != nil {
		c.opts.OnToken(tok)
	}
	c.updateReady()
	if failure != "" {
		return Token{}, fmt.Errorf("%w: %s", ErrNoToken, failure)
	}
	return tok, nil
}

// updateReady reports a readiness transition to the log and OnReady.
func (c *Cache) updateReady() {
	c.readyMu.Lock()
	defer c.readyMu.Unlock()
	ok, reason := c.Ready()
	if ok == c.lastReady {
		return
	}
	c.lastReady = ok
	if ok {
		c.log.Info("ready")
	} else {
		c.log.Warn("not ready", zap.String("reason", reason))
	}
	if c.opts.OnReady != nil {
		c.opts.OnReady(ok)
	}
}

// backoff is the delay after n consecutive failures: exponential with jitter, within
// [1 s, 60 s] (n=1 → 1–2 s, n=2 → 2–4 s, ... capped at 30–60 s).
func backoff(n int) time.Duration {
	base := min(time.Second<<min(max(n, 1), 7), backoffMax)
	return max(base/2+rand.N(base/2), time.Second)
}
