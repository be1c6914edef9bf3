package tokencache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeAuth is an in-memory Exchanger with Hasura Auth's semantics: PATs are looked up,
// refresh tokens rotate (the old one dies at once), errors are *ExchangeError. It
// records every call and every misuse of a refresh token.
type fakeAuth struct {
	t     testing.TB
	start time.Time
	now   func() time.Time

	mu        sync.Mutex
	ttl       time.Duration
	roles     []string
	validPATs map[string]bool
	newest    string          // the refresh token issued last
	live      map[string]bool // refresh tokens the server accepts
	retired   map[string]bool // rotated out, refused or dropped: must never be sent again
	misuse    []string        // descriptions of refresh tokens sent that should not have been
	issued    []string        // every credential seen or issued, for leak checks
	seq       int
	calls     []call
	script    map[string][]error // per grant, consumed one per call
	down      bool               // every call fails like a refused connection
	gate      chan struct{}      // when non-nil, calls wait for it to close
}

type call struct {
	grant string
	at    time.Duration // since the bubble started
	cred  string
}

func (c call) String() string { return fmt.Sprintf("%s@%v", c.grant, c.at) }

func newFakeAuth(t testing.TB, now func() time.Time) *fakeAuth {
	return &fakeAuth{
		t: t, start: now(), now: now,
		ttl: 900 * time.Second, roles: []string{"me", "user"},
		validPATs: map[string]bool{}, live: map[string]bool{}, retired: map[string]bool{},
		script: map[string][]error{},
	}
}

func (f *fakeAuth) addPAT(pat string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.validPATs[pat] = true
	f.issued = append(f.issued, pat)
}

// failNext makes the next calls of grant fail with errs, in order.
func (f *fakeAuth) failNext(grant string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[grant] = append(f.script[grant], errs...)
}

func (f *fakeAuth) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// hold makes calls wait until release.
func (f *fakeAuth) hold() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate = make(chan struct{})
}

func (f *fakeAuth) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.gate)
	f.gate = nil
}

// retireAll marks every live refresh token as one the client must drop (old session).
func (f *fakeAuth) retireAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for rt := range f.live {
		f.retired[rt] = true
	}
}

func (f *fakeAuth) callLog() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func (f *fakeAuth) count(grant string) int {
	n := 0
	for _, c := range f.callLog() {
		if c.grant == grant {
			n++
		}
	}
	return n
}

func (f *fakeAuth) begin(ctx context.Context, grant, cred string) error {
	f.mu.Lock()
	f.calls = append(f.calls, call{grant, f.now().Sub(f.start), cred})
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return &ExchangeError{Grant: grant, Err: ctx.Err()}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return &ExchangeError{Grant: grant, Err: errors.New("connect: connection refused")}
	}
	if s := f.script[grant]; len(s) > 0 {
		f.script[grant] = s[1:]
		return s[0]
	}
	return nil
}

// mintLocked issues a new session.
func (f *fakeAuth) mintLocked() *Session {
	f.seq++
	now := f.now()
	jwt := makeJWT(f.t, hasuraClaims(now.Add(f.ttl).Unix(), f.roles...))
	rt := fmt.Sprintf("00000000-0000-4000-8000-%012d", f.seq)
	f.live[rt] = true
	f.newest = rt
	f.issued = append(f.issued, jwt, rt)
	return &Session{AccessToken: NewSecret(jwt), ExpiresIn: f.ttl, RefreshToken: NewSecret(rt), RefreshTokenID: "id", UserRoles: []string{"user"}}
}

func (f *fakeAuth) ExchangePAT(ctx context.Context, pat Secret) (*Session, error) {
	if err := f.begin(ctx, GrantPAT, pat.Reveal()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.validPATs[pat.Reveal()] {
		return nil, &ExchangeError{Grant: GrantPAT, Status: 401, Code: "invalid-pat", Message: "Invalid or expired personal access token"}
	}
	return f.mintLocked(), nil
}

func (f *fakeAuth) Refresh(ctx context.Context, rt Secret) (*Session, error) {
	f.mu.Lock()
	switch raw := rt.Reveal(); {
	case f.retired[raw]:
		f.misuse = append(f.misuse, "retired refresh token "+raw+" sent")
	case raw != f.newest:
		f.misuse = append(f.misuse, "refresh token "+raw+" is not the newest ("+f.newest+")")
	}
	f.mu.Unlock()
	if err := f.begin(ctx, GrantRefreshToken, rt.Reveal()); err != nil {
		var ee *ExchangeError
		if errors.As(err, &ee) && ee.refused() {
			f.mu.Lock()
			f.retired[rt.Reveal()] = true // the client must not try it again
			f.mu.Unlock()
		}
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.live[rt.Reveal()] {
		return nil, &ExchangeError{Grant: GrantRefreshToken, Status: 401, Code: "invalid-refresh-token", Message: "Invalid or expired refresh token"}
	}
	delete(f.live, rt.Reveal())
	f.retired[rt.Reveal()] = true
	return f.mintLocked(), nil
}

func httpErr(grant string, status int, code string) *ExchangeError {
	return &ExchangeError{Grant: grant, Status: status, Code: code}
}

const (
	patA = "11111111-1111-4111-8111-111111111111"
	patB = "22222222-2222-4222-8222-222222222222"
)

// harness runs a Cache against a fakeAuth inside a synctest bubble.
type harness struct {
	t      *testing.T
	start  time.Time
	offset atomic.Int64 // added to the bubble clock: a wall-clock jump
	auth   *fakeAuth
	c      *Cache
	pat    atomic.Pointer[string]
	logs   *observer.ObservedLogs
	logBuf *syncBuffer

	mu       sync.Mutex
	ready    []bool
	renewals []string // "grant:ok"
	tokens   int

	cancel context.CancelFunc
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startHarness must be called inside synctest.Test. setup (may be nil) runs before
// New and Run, to script the fake and adjust options. It starts Run; cleanup stops it and
// checks that no refresh token was misused and no credential reached the log.
func startHarness(t *testing.T, setup func(h *harness, o *Options)) *harness {
	h := &harness{t: t, start: time.Now(), done: make(chan error, 1), logBuf: &syncBuffer{}}
	now := func() time.Time { return time.Now().Add(time.Duration(h.offset.Load())) }
	h.auth = newFakeAuth(t, now)
	h.auth.addPAT(patA)
	h.setPAT(patA)
	obsCore, logs := observer.New(zap.DebugLevel)
	jsonCore := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(h.logBuf), zap.DebugLevel)
	h.logs = logs
	opts := Options{
		PAT:       func() (Secret, error) { return NewSecret(*h.pat.Load()), nil },
		Exchanger: h.auth,
		Now:       now,
		Logger:    zap.New(zapcore.NewTee(obsCore, jsonCore)),
		OnReady: func(ok bool) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.ready = append(h.ready, ok)
		},
		OnRenewal: func(grant string, ok bool) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.renewals = append(h.renewals, fmt.Sprintf("%s:%v", grant, ok))
		},
		OnToken: func(Token) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.tokens++
		},
	}
	if setup != nil {
		setup(h, &opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	h.c = c
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- c.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("Run() = %v; want nil", err)
	}
	h.auth.mu.Lock()
	defer h.auth.mu.Unlock()
	for _, m := range h.auth.misuse {
		h.t.Errorf("refresh token misuse: %s", m)
	}
	logs := h.logBuf.String()
	for _, s := range h.auth.issued {
		if strings.Contains(logs, s) {
			h.t.Errorf("log output contains the credential %s", NewSecret(s))
		}
	}
}

func (h *harness) setPAT(p string) { h.pat.Store(&p) }

// elapsed is the bubble time since start (without the clock jump).
func (h *harness) elapsed() time.Duration { return time.Since(h.start) }

// token waits for a token (bounded by 24 h of fake time).
func (h *harness) token() Token {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Hour)
	defer cancel()
	tok, err := h.c.Token(ctx)
	if err != nil {
		h.t.Fatalf("Token() error = %v", err)
	}
	return tok
}

// probe returns the token if one is usable right now, without waiting.
func (h *harness) probe() (Token, bool) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tok, err := h.c.Token(ctx)
	return tok, err == nil
}

func (h *harness) readyEvents() []bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]bool(nil), h.ready...)
}

func (h *harness) renewalEvents() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.renewals...)
}

// sleepUntil advances the bubble clock to start+d and lets the loop settle.
func (h *harness) sleepUntil(d time.Duration) {
	time.Sleep(d - h.elapsed())
	synctestWait()
}
