package dxtratest_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is an injectable, manually advanced clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newServer(t *testing.T, opts dxtratest.Options) *dxtratest.Server {
	t.Helper()
	s := dxtratest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatalf("NewRequest: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func signIn(t *testing.T, s *dxtratest.Server, pat string) response {
	t.Helper()
	return do(t, http.MethodPost, s.AuthBaseURL()+"/signin/pat", `{"personalAccessToken":"`+pat+`"}`)
}

func refresh(t *testing.T, s *dxtratest.Server, rt string) response {
	t.Helper()
	return do(t, http.MethodPost, s.AuthBaseURL()+"/token", `{"refreshToken":"`+rt+`"}`)
}

type session struct {
	AccessToken          string `json:"accessToken"`
	AccessTokenExpiresIn int64  `json:"accessTokenExpiresIn"`
	RefreshToken         string `json:"refreshToken"`
	RefreshTokenID       string `json:"refreshTokenId"`
	User                 struct {
		ID          string   `json:"id"`
		DefaultRole string   `json:"defaultRole"`
		Roles       []string `json:"roles"`
	} `json:"user"`
}

// mustSession decodes a 200 body; wrapped selects the /signin/pat shape.
func mustSession(t *testing.T, r response, wrapped bool) session {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status = %d (body %s); want 200", r.status, r.body)
	}
	var s session
	if wrapped {
		var w struct {
			Session *session `json:"session"`
		}
		if err := json.Unmarshal(r.body, &w); err != nil || w.Session == nil {
			t.Fatalf("decode wrapped session %s: %v", r.body, err)
		}
		s = *w.Session
	} else if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatalf("decode session %s: %v", r.body, err)
	}
	return s
}

// topKeys returns the keys of the JSON object at the top of b, in order.
func topKeys(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", b)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("value: %v", err)
		}
	}
	return keys
}

// jwtPart decodes part i (0 header, 1 payload) of a JWT.
func jwtPart(t *testing.T, tok string, i int) []byte {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT has %d parts; want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("decode JWT part %d: %v", i, err)
	}
	return b
}

func TestSignInPATBody(t *testing.T) {
	clk := newClock()
	s := newServer(t, dxtratest.Options{Now: clk.Now, AccessTokenTTL: 60 * time.Second})
	r := signIn(t, s, s.NewPAT())
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", got)
	}
	if !bytes.HasSuffix(r.body, []byte("}}}\n")) || bytes.Count(r.body, []byte("\n")) != 1 {
		t.Errorf("body = %q; want one line ending in a newline", r.body)
	}
	if got, want := topKeys(t, r.body), []string{"session"}; !cmp.Equal(got, want) {
		t.Errorf("top keys = %v; want %v", got, want)
	}
	var w struct {
		Session json.RawMessage `json:"session"`
	}
	if err := json.Unmarshal(r.body, &w); err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"accessToken", "accessTokenExpiresIn", "refreshToken", "refreshTokenId", "user"}
	if got := topKeys(t, w.Session); !cmp.Equal(got, wantKeys) {
		t.Errorf("session keys = %v; want %v", got, wantKeys)
	}
	var sw struct {
		User json.RawMessage `json:"user"`
	}
	if err := json.Unmarshal(w.Session, &sw); err != nil {
		t.Fatal(err)
	}
	wantUser := []string{"activeMfaType", "avatarUrl", "createdAt", "defaultRole", "displayName", "email",
		"emailVerified", "id", "isAnonymous", "locale", "metadata", "phoneNumberVerified", "roles"}
	if got := topKeys(t, sw.User); !cmp.Equal(got, wantUser) {
		t.Errorf("user keys = %v; want %v", got, wantUser)
	}
	sess := mustSession(t, r, true)
	if sess.AccessTokenExpiresIn != 60 {
		t.Errorf("accessTokenExpiresIn = %d; want 60", sess.AccessTokenExpiresIn)
	}
	if sess.User.ID != s.UserID() || sess.User.DefaultRole != "user" || !cmp.Equal(sess.User.Roles, []string{"me", "user"}) {
		t.Errorf("user = %+v; want id %s, default role user, roles [me user]", sess.User, s.UserID())
	}
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if !uuid.MatchString(sess.RefreshToken) || !uuid.MatchString(sess.RefreshTokenID) {
		t.Errorf("refresh token %q / id %q are not lowercase UUID v4", sess.RefreshToken, sess.RefreshTokenID)
	}

	if got, want := string(jwtPart(t, sess.AccessToken, 0)), `{"alg":"HS256","typ":"JWT"}`; got != want {
		t.Errorf("JWT header = %s; want %s", got, want)
	}
	iat := clk.Now().Unix()
	wantPayload := fmt.Sprintf(`{"exp":%d,"https://hasura.io/jwt/claims":{"x-hasura-allowed-roles":["me","user"],`+
		`"x-hasura-default-role":"user","x-hasura-user-id":"%s","x-hasura-user-is-anonymous":"false"},`+
		`"iat":%d,"iss":"hasura-auth","sub":"%s"}`, iat+60, s.UserID(), iat, s.UserID())
	if got := string(jwtPart(t, sess.AccessToken, 1)); got != wantPayload {
		t.Errorf("JWT payload = %s\nwant %s", got, wantPayload)
	}
}

func TestRolesOptions(t *testing.T) {
	tests := []struct {
		name        string
		roles       []string
		defaultRole string
		wantRoles   []string
		wantDefault string
	}{
		{name: "defaults", wantRoles: []string{"me", "user"}, wantDefault: "user"},
		{name: "default role added", roles: []string{"reader"}, defaultRole: "writer",
			wantRoles: []string{"reader", "writer"}, wantDefault: "writer"},
		{name: "default role already listed", roles: []string{"a", "b"}, defaultRole: "a",
			wantRoles: []string{"a", "b"}, wantDefault: "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, dxtratest.Options{Roles: tc.roles, DefaultRole: tc.defaultRole})
			sess := mustSession(t, signIn(t, s, s.NewPAT()), true)
			if !cmp.Equal(sess.User.Roles, tc.wantRoles) || sess.User.DefaultRole != tc.wantDefault {
				t.Errorf("user roles = %v default %q; want %v default %q",
					sess.User.Roles, sess.User.DefaultRole, tc.wantRoles, tc.wantDefault)
			}
			var p struct {
				Claims map[string]any `json:"https://hasura.io/jwt/claims"`
			}
			if err := json.Unmarshal(jwtPart(t, sess.AccessToken, 1), &p); err != nil {
				t.Fatal(err)
			}
			var gotRoles []string
			for _, r := range p.Claims["x-hasura-allowed-roles"].([]any) {
				gotRoles = append(gotRoles, r.(string))
			}
			if !cmp.Equal(gotRoles, tc.wantRoles) || p.Claims["x-hasura-default-role"] != tc.wantDefault {
				t.Errorf("claims = %v; want roles %v default %q", p.Claims, tc.wantRoles, tc.wantDefault)
			}
		})
	}
}

type times struct {
	Exp int64 `json:"exp"`
	Iat int64 `json:"iat"`
}

func claimTimes(t *testing.T, tok string) times {
	t.Helper()
	var tm times
	if err := json.Unmarshal(jwtPart(t, tok, 1), &tm); err != nil {
		t.Fatal(err)
	}
	return tm
}

func TestAccessTokenTTL(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
		want int64
	}{
		{name: "default", ttl: 0, want: 900},
		{name: "whole seconds", ttl: 5 * time.Second, want: 5},
		{name: "fraction truncated", ttl: 2500 * time.Millisecond, want: 2},
		{name: "below a second", ttl: 300 * time.Millisecond, want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			s := newServer(t, dxtratest.Options{AccessTokenTTL: tc.ttl, Now: clk.Now})
			first := mustSession(t, signIn(t, s, s.NewPAT()), true)
			second := mustSession(t, refresh(t, s, first.RefreshToken), false)
			for _, sess := range []session{first, second} {
				tm := claimTimes(t, sess.AccessToken)
				if sess.AccessTokenExpiresIn != tc.want || tm.Exp-tm.Iat != tc.want {
					t.Errorf("accessTokenExpiresIn = %d, exp-iat = %d; want %d", sess.AccessTokenExpiresIn, tm.Exp-tm.Iat, tc.want)
				}
			}
			if tm := claimTimes(t, first.AccessToken); tm.Iat != clk.Now().Unix() {
				t.Errorf("iat = %d; want now %d", tm.Iat, clk.Now().Unix())
			}
		})
	}
}

func TestTokensAreDistinctWithinASecond(t *testing.T) {
	clk := newClock()
	s := newServer(t, dxtratest.Options{Now: clk.Now, AccessTokenTTL: 30 * time.Second})
	pat := s.NewPAT()
	seen := map[string]bool{}
	var prev int64
	for i := range 3 {
		tok := mustSession(t, signIn(t, s, pat), true).AccessToken
		if seen[tok] {
			t.Fatalf("sign-in %d returned an access token issued before", i)
		}
		seen[tok] = true
		tm := claimTimes(t, tok)
		if tm.Exp-tm.Iat != 30 || tm.Iat <= prev {
			t.Errorf("sign-in %d: iat %d exp %d; want exp-iat 30 and iat after %d", i, tm.Iat, tm.Exp, prev)
		}
		prev = tm.Iat
	}
}

func TestSignInMintsSeparateRefreshTokens(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	pat := s.NewPAT()
	a := mustSession(t, signIn(t, s, pat), true)
	b := mustSession(t, signIn(t, s, pat), true)
	if a.RefreshToken == b.RefreshToken || a.RefreshTokenID == b.RefreshTokenID {
		t.Fatalf("two sign-ins share refresh token or id: %+v %+v", a, b)
	}
	// Both sessions live independently.
	mustSession(t, refresh(t, s, a.RefreshToken), false)
	mustSession(t, refresh(t, s, b.RefreshToken), false)
}

func wantAuthError(t *testing.T, r response, status int, code, message string) {
	t.Helper()
	want := fmt.Sprintf(`{"error":%q,"message":%q,"status":%d}`+"\n", code, message, status)
	if r.status != status || string(r.body) != want {
		t.Errorf("got %d %q; want %d %q", r.status, r.body, status, want)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
}

const (
	invalidPATMsg = "Invalid or expired personal access token"
	invalidRTMsg  = "Invalid or expired refresh token"
)

func TestRefreshRotates(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	first := mustSession(t, signIn(t, s, s.NewPAT()), true)
	r := refresh(t, s, first.RefreshToken)
	if got := topKeys(t, r.body); !cmp.Equal(got, []string{"accessToken", "accessTokenExpiresIn", "refreshToken", "refreshTokenId", "user"}) {
		t.Errorf("/token body keys = %v; want the bare session", got)
	}
	if !bytes.HasSuffix(r.body, []byte("}}\n")) {
		t.Errorf("/token body = %q; want a trailing newline", r.body)
	}
	second := mustSession(t, r, false)
	if second.RefreshToken == first.RefreshToken {
		t.Errorf("refreshToken not rotated")
	}
	if second.RefreshTokenID != first.RefreshTokenID {
		t.Errorf("refreshTokenId = %q; want unchanged %q", second.RefreshTokenID, first.RefreshTokenID)
	}
	if second.AccessToken == first.AccessToken {
		t.Errorf("access token not renewed")
	}
	wantAuthError(t, refresh(t, s, first.RefreshToken), 401, "invalid-refresh-token", invalidRTMsg)
	// Reusing the old token does not revoke the family.
	third := mustSession(t, refresh(t, s, second.RefreshToken), false)
	if third.RefreshTokenID != first.RefreshTokenID {
		t.Errorf("refreshTokenId changed on the second rotation")
	}
}

func TestConcurrentRefreshSingleWinner(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	rt := mustSession(t, signIn(t, s, s.NewPAT()), true).RefreshToken
	const n = 8
	start := make(chan struct{})
	results := make(chan response, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, s.AuthBaseURL()+"/token", strings.NewReader(`{"refreshToken":"`+rt+`"}`))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- response{status: -1, body: []byte(err.Error())}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- response{resp.StatusCode, resp.Header, b}
		})
	}
	close(start)
	wg.Wait()
	close(results)
	var ok, rejected int
	for r := range results {
		switch {
		case r.status == 200:
			ok++
		case r.status == 401 && bytes.Contains(r.body, []byte(`"invalid-refresh-token"`)):
			rejected++
		default:
			t.Errorf("unexpected answer %d %s", r.status, r.body)
		}
	}
	if ok != 1 || rejected != n-1 {
		t.Errorf("%d successes, %d invalid-refresh-token; want 1 and %d", ok, rejected, n-1)
	}
	if got := s.Calls(dxtratest.TokenRefresh); got != n {
		t.Errorf("Calls(TokenRefresh) = %d; want %d", got, n)
	}
}

func TestRefreshTokenExpirySlides(t *testing.T) {
	clk := newClock()
	s := newServer(t, dxtratest.Options{Now: clk.Now, RefreshTokenTTL: 10 * time.Second})
	rt := mustSession(t, signIn(t, s, s.NewPAT()), true).RefreshToken
	clk.Add(6 * time.Second)
	rt = mustSession(t, refresh(t, s, rt), false).RefreshToken
	clk.Add(6 * time.Second) // 12 s after sign-in, 6 s after the refresh
	rt = mustSession(t, refresh(t, s, rt), false).RefreshToken
	clk.Add(10 * time.Second)
	wantAuthError(t, refresh(t, s, rt), 401, "invalid-refresh-token", invalidRTMsg)
}

func TestCrossUseAndRevocation(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	pat, other := s.NewPAT(), s.NewPAT()
	sess := mustSession(t, signIn(t, s, pat), true)
	otherSess := mustSession(t, signIn(t, s, other), true)

	wantAuthError(t, refresh(t, s, pat), 401, "invalid-refresh-token", invalidRTMsg)
	wantAuthError(t, signIn(t, s, sess.RefreshToken), 401, "invalid-pat", invalidPATMsg)
	wantAuthError(t, signIn(t, s, "00000000-0000-4000-8000-000000000000"), 401, "invalid-pat", invalidPATMsg)
	// The pattern is unanchored: a leading space passes validation, then fails lookup.
	wantAuthError(t, signIn(t, s, " "+pat), 401, "invalid-pat", invalidPATMsg)

	s.RevokePAT(pat)
	wantAuthError(t, signIn(t, s, pat), 401, "invalid-pat", invalidPATMsg)
	wantAuthError(t, refresh(t, s, sess.RefreshToken), 401, "invalid-refresh-token", invalidRTMsg)
	// Another PAT's session is untouched.
	mustSession(t, refresh(t, s, otherSess.RefreshToken), false)
	mustSession(t, signIn(t, s, other), true)
}

func TestDisabledUser(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	pat := s.NewPAT()
	sess := mustSession(t, signIn(t, s, pat), true)
	s.SetUserDisabled(true)
	wantAuthError(t, signIn(t, s, pat), 401, "disabled-user", "User is disabled")
	wantAuthError(t, refresh(t, s, sess.RefreshToken), 401, "disabled-user", "User is disabled")
	// Unknown credentials still say so.
	wantAuthError(t, refresh(t, s, pat), 401, "invalid-refresh-token", invalidRTMsg)
	s.SetUserDisabled(false)
	mustSession(t, refresh(t, s, sess.RefreshToken), false) // the same token works again
}

func TestConcealErrors(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	pat := s.NewPAT()
	sess := mustSession(t, signIn(t, s, pat), true)
	s.SetConcealErrors(true)
	const msg = "The request payload is incorrect"
	wantAuthError(t, signIn(t, s, sess.RefreshToken), 400, "invalid-request", msg)
	wantAuthError(t, refresh(t, s, pat), 400, "invalid-request", msg)
	s.SetUserDisabled(true)
	wantAuthError(t, signIn(t, s, pat), 400, "invalid-request", msg)
	s.SetUserDisabled(false)
	// Validation errors keep their shape.
	if r := signIn(t, s, "nope"); r.status != 400 || bytes.Contains(r.body, []byte("invalid-request")) {
		t.Errorf("validation error under concealment = %d %s; want the validator's 400", r.status, r.body)
	}
	mustSession(t, signIn(t, s, pat), true)
}

func TestValidationErrors(t *testing.T) {
	const (
		pfx       = `error in openapi3filter.RequestError: request body has an error: `
		patSchema = pfx + `doesn't match schema #/components/schemas/SignInPATRequest: `
		rtSchema  = pfx + `doesn't match schema #/components/schemas/RefreshTokenRequest: `
		pattern   = `string doesn't match the regular expression \"\\b[0-9a-f]{8}\\b-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-\\b[0-9a-f]{12}\\b\"`
	)
	tests := []struct {
		name string
		path string
		body string
		want string // the JSON-escaped error text
	}{
		{"not a uuid", "/signin/pat", `{"personalAccessToken":"not-a-uuid"}`, patSchema + `Error at \"/personalAccessToken\": ` + pattern},
		{"empty string", "/signin/pat", `{"personalAccessToken":""}`, patSchema + `Error at \"/personalAccessToken\": ` + pattern},
		{"uppercase", "/signin/pat", `{"personalAccessToken":"0F0F0F0F-0000-4000-8000-000000000000"}`, patSchema + `Error at \"/personalAccessToken\": ` + pattern},
		{"missing", "/signin/pat", `{}`, patSchema + `Error at \"/personalAccessToken\": property \"personalAccessToken\" is missing`},
		{"number", "/signin/pat", `{"personalAccessToken":123}`, patSchema + `Error at \"/personalAccessToken\": value must be a string`},
		{"extra property", "/signin/pat", `{"personalAccessToken":"0f0f0f0f-0000-4000-8000-000000000000","extra":1}`, patSchema + `property \"extra\" is unsupported`},
		{"truncated", "/signin/pat", `{"personalAccessToken":`, pfx + `failed to decode request body: unexpected EOF`},
		{"garbage", "/signin/pat", `garbage`, pfx + `failed to decode request body: invalid character 'g' looking for beginning of value`},
		{"empty body", "/signin/pat", ``, pfx + `value is required but missing`},
		{"array", "/signin/pat", `[]`, patSchema + `value must be an object`},
		{"refresh pattern", "/token", `{"refreshToken":"garbage"}`, rtSchema + `Error at \"/refreshToken\": ` + pattern},
		{"refresh missing", "/token", `{}`, rtSchema + `Error at \"/refreshToken\": property \"refreshToken\" is missing`},
		{"refresh null", "/token", `null`, rtSchema + `Value is not nullable`},
		{"refresh pat key", "/token", `{"personalAccessToken":"0f0f0f0f-0000-4000-8000-000000000000"}`, rtSchema + `property \"personalAccessToken\" is unsupported`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, dxtratest.Options{})
			r := do(t, http.MethodPost, s.AuthBaseURL()+tc.path, tc.body)
			want := `{"error":"` + tc.want + `"}`
			if r.status != 400 || string(r.body) != want {
				t.Errorf("POST %s %s = %d %s\nwant 400 %s", tc.path, tc.body, r.status, r.body, want)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q; want application/json; charset=utf-8", ct)
			}
		})
	}
}

func TestRoutingAndPrefix(t *testing.T) {
	tests := []struct {
		name         string
		opts         dxtratest.Options
		wantBaseTail string
	}{
		{name: "default /v1", wantBaseTail: "/v1"},
		{name: "custom prefix", opts: dxtratest.Options{Prefix: "/auth/v1/"}, wantBaseTail: "/auth/v1"},
		{name: "bare", opts: dxtratest.Options{BarePrefix: true}, wantBaseTail: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.opts)
			if got := s.AuthBaseURL(); got != s.AuthURL+tc.wantBaseTail {
				t.Fatalf("AuthBaseURL() = %q; want %q", got, s.AuthURL+tc.wantBaseTail)
			}
			pat := s.NewPAT()
			mustSession(t, signIn(t, s, pat), true)

			notFound := []struct{ method, url string }{
				{http.MethodGet, s.AuthBaseURL() + "/signin/pat"},
				{http.MethodPut, s.AuthBaseURL() + "/token"},
				{http.MethodPost, s.AuthBaseURL() + "/signin/password"},
				{http.MethodPost, s.AuthURL + "/v2/signin/pat"},
			}
			for _, nf := range notFound {
				r := do(t, nf.method, nf.url, `{"personalAccessToken":"`+pat+`"}`)
				if r.status != 404 || string(r.body) != "404 page not found" || r.header.Get("Content-Type") != "text/plain" {
					t.Errorf("%s %s = %d %q (%s); want 404 text/plain", nf.method, nf.url, r.status, r.body, r.header.Get("Content-Type"))
				}
			}
			if got := s.Calls(dxtratest.SignInPAT) + s.Calls(dxtratest.TokenRefresh); got != 1 {
				t.Errorf("calls counted = %d; want 1 (404s do not count)", got)
			}
			req, _ := http.NewRequest(http.MethodPost, s.AuthBaseURL()+"/signin/pat/", nil)
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 307 || resp.Header.Get("Location") != tc.wantBaseTail+"/signin/pat" {
				t.Errorf("trailing slash = %d Location %q; want 307 %q", resp.StatusCode, resp.Header.Get("Location"), tc.wantBaseTail+"/signin/pat")
			}
		})
	}
}

func TestFailNext(t *testing.T) {
	tests := []struct {
		name       string
		ep         dxtratest.Endpoint
		status     int
		retryAfter string
		wantBody   string
	}{
		{name: "429 bare", ep: dxtratest.SignInPAT, status: 429, wantBody: ""},
		{name: "429 retry-after", ep: dxtratest.TokenRefresh, status: 429, retryAfter: "7", wantBody: ""},
		{name: "500", ep: dxtratest.SignInPAT, status: 500,
			wantBody: `{"error":"internal-server-error","message":"Internal server error","status":500}` + "\n"},
		{name: "502", ep: dxtratest.TokenRefresh, status: 502,
			wantBody: `{"error":"internal-server-error","message":"Internal server error","status":502}` + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, dxtratest.Options{})
			pat := s.NewPAT()
			rt := mustSession(t, signIn(t, s, pat), true).RefreshToken
			call := func() response {
				if tc.ep == dxtratest.SignInPAT {
					return signIn(t, s, pat)
				}
				return refresh(t, s, rt)
			}
			before := s.Calls(tc.ep)
			s.FailNext(tc.ep, 2, tc.status, tc.retryAfter)
			for i := range 2 {
				r := call()
				if r.status != tc.status || string(r.body) != tc.wantBody {
					t.Errorf("call %d = %d %q; want %d %q", i, r.status, r.body, tc.status, tc.wantBody)
				}
				if got := r.header.Get("Retry-After"); got != tc.retryAfter {
					t.Errorf("Retry-After = %q; want %q", got, tc.retryAfter)
				}
				if got := r.header.Get("Content-Type"); tc.wantBody == "" && got != "" {
					t.Errorf("Content-Type of empty body = %q; want none", got)
				}
			}
			mustSession(t, call(), tc.ep == dxtratest.SignInPAT)
			if got := s.Calls(tc.ep) - before; got != 3 {
				t.Errorf("Calls(%s) grew by %d; want 3", tc.ep, got)
			}
		})
	}
}

func TestSetDown(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	pat := s.NewPAT()
	s.SetDown(dxtratest.SignInPAT, true)
	for range 3 {
		if r := signIn(t, s, pat); r.status != 503 || !bytes.Contains(r.body, []byte(`"internal-server-error"`)) {
			t.Fatalf("down sign-in = %d %s; want 503 internal-server-error", r.status, r.body)
		}
	}
	s.SetDown(dxtratest.SignInPAT, false)
	mustSession(t, signIn(t, s, pat), true)
	if got := s.Calls(dxtratest.SignInPAT); got != 4 {
		t.Errorf("Calls(SignInPAT) = %d; want 4", got)
	}
}

func TestHealthz(t *testing.T) {
	s := newServer(t, dxtratest.Options{})
	for path, want := range map[string]string{"/healthz": `{"status":"ok"}`, "/v1/healthz": `"OK"`} {
		if r := do(t, http.MethodGet, s.AuthURL+path, ""); r.status != 200 || string(r.body) != want {
			t.Errorf("GET %s = %d %s; want 200 %s", path, r.status, r.body, want)
		}
	}
}
