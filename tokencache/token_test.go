package tokencache

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestUsableUntil(t *testing.T) {
	tests := []struct {
		name string
		life time.Duration
		want time.Duration // after issue
	}{
		{"900 s: last 5 s unused", 900 * time.Second, 895 * time.Second},
		{"60 s: last 5 s unused", 60 * time.Second, 55 * time.Second},
		{"50 s: 10 % equals 5 s", 50 * time.Second, 45 * time.Second},
		{"5 s: last 10 % unused", 5 * time.Second, 4500 * time.Millisecond},
		{"2 s: last 10 % unused", 2 * time.Second, 1800 * time.Millisecond},
		{"already expired at arrival", 0, 0},
		{"expiry before arrival", -time.Second, -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := usableUntil(t0, t0.Add(tt.life))
			if want := t0.Add(tt.want); !got.Equal(want) {
				t.Errorf("usableUntil(t0, t0+%v) = t0%+v; want t0%+v", tt.life, got.Sub(t0), tt.want)
			}
		})
	}
}

func TestRenewAt(t *testing.T) {
	tests := []struct {
		name          string
		life          time.Duration
		refreshBefore time.Duration
		want          time.Duration // after issue
	}{
		{"default 2m on 900 s", 900 * time.Second, 2 * time.Minute, 780 * time.Second},
		{"clamped to half of 60 s", 60 * time.Second, 2 * time.Minute, 30 * time.Second},
		{"exactly half", 240 * time.Second, 2 * time.Minute, 120 * time.Second},
		{"short before", 900 * time.Second, 10 * time.Second, 890 * time.Second},
		{"3 s lifetime", 3 * time.Second, 2 * time.Minute, 1500 * time.Millisecond},
		{"expired at arrival", 0, 2 * time.Minute, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := Token{IssuedAt: t0, Expiry: t0.Add(tt.life)}
			got := renewAt(tok, tt.refreshBefore)
			if want := t0.Add(tt.want); !got.Equal(want) {
				t.Errorf("renewAt(life %v, before %v) = t0%+v; want t0%+v", tt.life, tt.refreshBefore, got.Sub(t0), tt.want)
			}
		})
	}
}

func TestNewToken(t *testing.T) {
	exp := func(d time.Duration) int64 { return t0.Add(d).Unix() }
	tests := []struct {
		name       string
		jwt        string
		expiresIn  time.Duration
		userRoles  []string
		wantExpiry time.Duration
		wantRoles  []string
	}{
		{"JWT exp earlier than arrival+expiresIn", makeJWT(t, hasuraClaims(exp(800*time.Second), "me", "user")), 900 * time.Second, []string{"user"}, 800 * time.Second, []string{"me", "user"}},
		{"arrival+expiresIn earlier than JWT exp", makeJWT(t, hasuraClaims(exp(900*time.Second), "me")), 600 * time.Second, nil, 600 * time.Second, []string{"me"}},
		{"no JWT roles: session roles", makeJWT(t, map[string]any{"exp": exp(900 * time.Second)}), 900 * time.Second, []string{"user"}, 900 * time.Second, []string{"user"}},
		{"opaque token: expiresIn and session roles", "opaque", 900 * time.Second, []string{"user"}, 900 * time.Second, []string{"user"}},
		{"no roles anywhere: unknown", "opaque", 900 * time.Second, nil, 900 * time.Second, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Session{AccessToken: NewSecret(tt.jwt), ExpiresIn: tt.expiresIn, RefreshToken: NewSecret("r"), UserRoles: tt.userRoles}
			got := newToken(s, t0)
			if want := t0.Add(tt.wantExpiry); !got.Expiry.Equal(want) {
				t.Errorf("Expiry = t0%+v; want t0%+v", got.Expiry.Sub(t0), tt.wantExpiry)
			}
			if want := usableUntil(t0, got.Expiry); !got.UsableUntil.Equal(want) {
				t.Errorf("UsableUntil = %v; want %v", got.UsableUntil, want)
			}
			if !got.IssuedAt.Equal(t0) || got.Value.Reveal() != tt.jwt {
				t.Errorf("IssuedAt, Value = %v, %v; want %v and the JWT", got.IssuedAt, got.Value, t0)
			}
			if diff := cmp.Diff(tt.wantRoles, got.Roles); diff != "" {
				t.Errorf("Roles mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTokenUsable(t *testing.T) {
	tok := Token{Value: NewSecret("x"), UsableUntil: t0}
	tests := []struct {
		name string
		tok  Token
		now  time.Time
		want bool
	}{
		{"before", tok, t0.Add(-time.Nanosecond), true},
		{"at UsableUntil", tok, t0, false},
		{"after", tok, t0.Add(time.Hour), false},
		{"zero value", Token{UsableUntil: t0}, t0.Add(-time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.Usable(tt.now); got != tt.want {
				t.Errorf("Usable() = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		n        int
		min, max time.Duration
	}{
		{1, time.Second, 2 * time.Second},
		{2, 2 * time.Second, 4 * time.Second},
		{3, 4 * time.Second, 8 * time.Second},
		{6, 30 * time.Second, 60 * time.Second},
		{100, 30 * time.Second, 60 * time.Second},
	}
	for _, tt := range tests {
		for range 50 {
			if got := backoff(tt.n); got < tt.min || got >= tt.max {
				t.Fatalf("backoff(%d) = %v; want in [%v, %v)", tt.n, got, tt.min, tt.max)
			}
		}
	}
}
