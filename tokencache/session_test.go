package tokencache

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Observed bodies (PROTOCOL.md appendix), with placeholder values.
const (
	observedSignInPAT = `{"session":{"accessToken":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDA5MDAsImh0dHBzOi8vaGFzdXJhLmlvL2p3dC9jbGFpbXMiOnsieC1oYXN1cmEtYWxsb3dlZC1yb2xlcyI6WyJtZSIsInVzZXIiXSwieC1oYXN1cmEtZGVmYXVsdC1yb2xlIjoidXNlciIsIngtaGFzdXJhLXVzZXItaWQiOiJ1IiwieC1oYXN1cmEtdXNlci1pcy1hbm9ueW1vdXMiOiJmYWxzZSJ9LCJpYXQiOjE3MDAwMDAwMDAsImlzcyI6Imhhc3VyYS1hdXRoIiwic3ViIjoidSJ9.c2ln","accessTokenExpiresIn":900,"refreshToken":"5d1b4c2a-8e7f-4a3b-9c6d-2e1f0a9b8c7d","refreshTokenId":"9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",` +
		`"user":{"activeMfaType":null,"avatarUrl":"https://www.gravatar.com/avatar/x?d=blank\u0026r=g","createdAt":"2026-12-04T19:29:33.880721Z","defaultRole":"user","displayName":"a@b.c","email":"a@b.c","emailVerified":false,"id":"u","isAnonymous":false,"locale":"en","metadata":null,"phoneNumberVerified":false,"roles":["me","user"]}}}` + "\n"
	observedRefresh = `{"accessToken":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDA5MDB9.c2ln","accessTokenExpiresIn":900,"refreshToken":"6e2c5d3b-9f8a-4b4c-8d7e-3f2a1b0c9d8e","refreshTokenId":"9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d","user":{"roles":["user"]}}`
)

func TestDecodeSession(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    *Session
		wantErr string
	}{
		{
			name: "signin/pat wrapped shape",
			body: observedSignInPAT,
			want: &Session{ExpiresIn: 900 * time.Second, RefreshTokenID: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", UserRoles: []string{"me", "user"}},
		},
		{
			name: "token bare shape",
			body: observedRefresh,
			want: &Session{ExpiresIn: 900 * time.Second, RefreshTokenID: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", UserRoles: []string{"user"}},
		},
		{
			name: "no user",
			body: `{"accessToken":"a","accessTokenExpiresIn":5,"refreshToken":"r"}`,
			want: &Session{ExpiresIn: 5 * time.Second},
		},
		{
			name: "user with bad roles is ignored",
			body: `{"accessToken":"a","accessTokenExpiresIn":5,"refreshToken":"r","user":{"roles":[1]}}`,
			want: &Session{ExpiresIn: 5 * time.Second},
		},
		{
			name: "fractional lifetime",
			body: `{"accessToken":"a","accessTokenExpiresIn":1.5,"refreshToken":"r"}`,
			want: &Session{ExpiresIn: 1500 * time.Millisecond},
		},
		{name: "missing accessToken", body: `{"accessTokenExpiresIn":900,"refreshToken":"r"}`, wantErr: "accessToken missing"},
		{name: "empty accessToken", body: `{"accessToken":"","accessTokenExpiresIn":900,"refreshToken":"r"}`, wantErr: "accessToken missing"},
		{name: "missing refreshToken", body: `{"session":{"accessToken":"a","accessTokenExpiresIn":900}}`, wantErr: "refreshToken missing"},
		{name: "missing lifetime", body: `{"accessToken":"a","refreshToken":"r"}`, wantErr: "accessTokenExpiresIn missing"},
		{name: "zero lifetime", body: `{"accessToken":"a","accessTokenExpiresIn":0,"refreshToken":"r"}`, wantErr: "not positive"},
		{name: "negative lifetime", body: `{"accessToken":"a","accessTokenExpiresIn":-3,"refreshToken":"r"}`, wantErr: "not positive"},
		{name: "huge lifetime", body: `{"accessToken":"a","accessTokenExpiresIn":1e300,"refreshToken":"r"}`, wantErr: "too large"},
		{name: "string lifetime", body: `{"accessToken":"a","accessTokenExpiresIn":"soon","refreshToken":"r"}`, wantErr: "decode session"},
		{name: "accessToken not a string", body: `{"accessToken":5,"accessTokenExpiresIn":900,"refreshToken":"r"}`, wantErr: "decode session"},
		{name: "not JSON", body: `<html>bad gateway</html>`, wantErr: "invalid JSON"},
		{name: "empty", body: ``, wantErr: "decode session"},
		{name: "array", body: `[]`, wantErr: "decode session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeSession([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DecodeSession() error = %v; want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeSession() error = %v", err)
			}
			if got.AccessToken.IsZero() || got.RefreshToken.IsZero() {
				t.Fatalf("DecodeSession() tokens missing: %+v", got)
			}
			got.AccessToken, got.RefreshToken = Secret{}, Secret{}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(Secret.Equal)); diff != "" {
				t.Errorf("DecodeSession() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeSessionKeepsValues(t *testing.T) {
	s, err := DecodeSession([]byte(observedRefresh))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.RefreshToken.Reveal(), "6e2c5d3b-9f8a-4b4c-8d7e-3f2a1b0c9d8e"; got != want {
		t.Errorf("RefreshToken = %q; want %q", got, want)
	}
	if got := s.AccessToken.Reveal(); !strings.HasPrefix(got, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.") {
		t.Errorf("AccessToken = %q; want the JWT", got)
	}
}

func TestDecodeSessionErrorHidesSecrets(t *testing.T) {
	body := `{"accessToken":"` + knownSecret + `","accessTokenExpiresIn":"` + knownSecret + `","refreshToken":"` + knownSecret + `"}`
	_, err := DecodeSession([]byte(body))
	if err == nil {
		t.Fatal("DecodeSession() error = nil; want one")
	}
	if strings.Contains(err.Error(), knownSecret) {
		t.Fatalf("error %q reveals the secret", err)
	}
}

func FuzzDecodeSession(f *testing.F) {
	f.Add([]byte(observedSignInPAT))
	f.Add([]byte(observedRefresh))
	f.Add([]byte(`{"session":null,"accessToken":"a","accessTokenExpiresIn":1,"refreshToken":"r"}`))
	f.Add([]byte(`{"session":{"accessToken":"a","accessTokenExpiresIn":9.2233720368547e9,"refreshToken":"r","user":null}}`))
	f.Add([]byte(`{"accessTokenExpiresIn":1e-10}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := DecodeSession(body)
		if err != nil {
			if s != nil {
				t.Fatalf("DecodeSession() = %+v, %v; want nil session with an error", s, err)
			}
			return
		}
		if s.AccessToken.IsZero() || s.RefreshToken.IsZero() || s.ExpiresIn <= 0 {
			t.Fatalf("DecodeSession() = %+v; want tokens and a positive lifetime", s)
		}
		// Building a token from any accepted session must not panic and must not
		// extend the lifetime beyond accessTokenExpiresIn.
		now := time.Unix(1700000000, 0)
		tok := newToken(s, now)
		if tok.Expiry.After(now.Add(s.ExpiresIn)) || tok.UsableUntil.After(tok.Expiry) {
			t.Fatalf("newToken() = expiry %v usable %v; want ≤ %v", tok.Expiry, tok.UsableUntil, now.Add(s.ExpiresIn))
		}
	})
}

func TestParseJWTClaims(t *testing.T) {
	exp := int64(1700000900)
	tests := []struct {
		name    string
		token   string
		want    jwtClaims
		wantErr bool
	}{
		{name: "hasura auth token", token: makeJWT(t, hasuraClaims(exp, "me", "user")), want: jwtClaims{Exp: time.Unix(exp, 0).UTC(), Roles: []string{"me", "user"}}},
		{name: "observed", token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDA5MDAsImh0dHBzOi8vaGFzdXJhLmlvL2p3dC9jbGFpbXMiOnsieC1oYXN1cmEtYWxsb3dlZC1yb2xlcyI6WyJtZSIsInVzZXIiXSwieC1oYXN1cmEtZGVmYXVsdC1yb2xlIjoidXNlciIsIngtaGFzdXJhLXVzZXItaWQiOiJ1IiwieC1oYXN1cmEtdXNlci1pcy1hbm9ueW1vdXMiOiJmYWxzZSJ9LCJpYXQiOjE3MDAwMDAwMDAsImlzcyI6Imhhc3VyYS1hdXRoIiwic3ViIjoidSJ9.c2ln", want: jwtClaims{Exp: time.Unix(exp, 0).UTC(), Roles: []string{"me", "user"}}},
		{name: "no claims namespace", token: makeJWT(t, map[string]any{"exp": exp}), want: jwtClaims{Exp: time.Unix(exp, 0).UTC()}},
		{name: "stringified claims", token: makeJWT(t, map[string]any{"exp": exp, hasuraClaimsKey: `{"x-hasura-allowed-roles":["user"]}`}), want: jwtClaims{Exp: time.Unix(exp, 0).UTC(), Roles: []string{"user"}}},
		{name: "fractional exp", token: makeJWT(t, map[string]any{"exp": 1700000900.5}), want: jwtClaims{Exp: time.Unix(exp, 5e8).UTC()}},
		{name: "no exp", token: makeJWT(t, map[string]any{"sub": "x"}), want: jwtClaims{}},
		{name: "exp as string is ignored", token: makeJWT(t, map[string]any{"exp": "1700000900"}), want: jwtClaims{}},
		{name: "negative exp is ignored", token: makeJWT(t, map[string]any{"exp": -1}), want: jwtClaims{}},
		{name: "sub-second exp is ignored", token: makeJWT(t, map[string]any{"exp": 0.304}), want: jwtClaims{}},
		{name: "absurd exp is ignored", token: makeJWT(t, map[string]any{"exp": 1e300}), want: jwtClaims{}},
		{name: "roles not strings", token: makeJWT(t, map[string]any{"exp": exp, hasuraClaimsKey: map[string]any{"x-hasura-allowed-roles": []int{1}}}), want: jwtClaims{Exp: time.Unix(exp, 0).UTC()}},
		{name: "padded payload", token: "e30." + "eyJleHAiOjE3MDAwMDA5MDB9" + "==" + ".s", want: jwtClaims{Exp: time.Unix(exp, 0).UTC()}},
		{name: "opaque token", token: "5d1b4c2a-8e7f-4a3b-9c6d-2e1f0a9b8c7d", wantErr: true},
		{name: "two parts", token: "a.b", wantErr: true},
		{name: "bad base64", token: "a.!!!.c", wantErr: true},
		{name: "payload not JSON", token: "a.bm90IGpzb24.c", wantErr: true},
		{name: "payload is an array", token: "a.W10.c", wantErr: true},
		{name: "empty", token: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseJWTClaims(tt.token)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseJWTClaims() error = %v; want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseJWTClaims() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseJWTClaims(f *testing.F) {
	f.Add("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDA5MDAsImh0dHBzOi8vaGFzdXJhLmlvL2p3dC9jbGFpbXMiOnsieC1oYXN1cmEtYWxsb3dlZC1yb2xlcyI6WyJtZSIsInVzZXIiXSwieC1oYXN1cmEtZGVmYXVsdC1yb2xlIjoidXNlciIsIngtaGFzdXJhLXVzZXItaWQiOiJ1IiwieC1oYXN1cmEtdXNlci1pcy1hbm9ueW1vdXMiOiJmYWxzZSJ9LCJpYXQiOjE3MDAwMDAwMDAsImlzcyI6Imhhc3VyYS1hdXRoIiwic3ViIjoidSJ9.c2ln")
	f.Add("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDA5MDB9.c2ln")
	f.Add("a.eyJleHAiOjEuNWUxMH0.c") // {"exp":1.5e10}
	f.Add("a.eyJodHRwczovL2hhc3VyYS5pby9qd3QvY2xhaW1zIjoie1wieC1oYXN1cmEtYWxsb3dlZC1yb2xlc1wiOltcInVzZXJcIl19In0.c")
	f.Add("..")
	f.Add("a.eyJleHAiOjAuMzA0fQ.c") // {"exp":0.304}: found by fuzzing, once read as the epoch
	f.Fuzz(func(t *testing.T, token string) {
		c, err := parseJWTClaims(token)
		if err != nil {
			return
		}
		if !c.Exp.IsZero() && (c.Exp.Unix() <= 0 || c.Exp.Unix() >= 1<<40) {
			t.Fatalf("parseJWTClaims() exp = %v; want within (0, 2^40) s", c.Exp)
		}
	})
}
