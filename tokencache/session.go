package tokencache

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Session is what the auth service returned for a grant: the body of a 200 from
// /signin/pat ({"session":{...}}) or /token (the bare session object). A Session is not
// modified after DecodeSession returns it; share it freely.
type Session struct {
	AccessToken    Secret
	ExpiresIn      time.Duration // accessTokenExpiresIn: the lifetime, not a point in time
	RefreshToken   Secret
	RefreshTokenID string
	UserRoles      []string // session user.roles; nil when absent
}

// wireSession mirrors Hasura Auth's Session object. Fields the cache does not need
// (user id, e-mail, metadata ...) are not decoded.
type wireSession struct {
	AccessToken          *string         `json:"accessToken"`
	AccessTokenExpiresIn *json.Number    `json:"accessTokenExpiresIn"`
	RefreshToken         *string         `json:"refreshToken"`
	RefreshTokenID       string          `json:"refreshTokenId"`
	User                 json.RawMessage `json:"user"`
}

// maxExpiresInSeconds keeps ExpiresIn inside time.Duration.
const maxExpiresInSeconds = math.MaxInt64 / int64(time.Second)

// DecodeSession parses the body of a successful grant. It accepts both the wrapped
// {"session":{...}} shape of /signin/pat and the bare object of /token. It requires
// accessToken, a positive accessTokenExpiresIn (seconds) and refreshToken; a user whose
// roles cannot be read leaves UserRoles nil. Errors never contain token values.
// DecodeSession is safe for concurrent use.
func DecodeSession(body []byte) (*Session, error) {
	var doc struct {
		Session *wireSession `json:"session"`
		wireSession
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode session: %w", jsonErr(err))
	}
	w := &doc.wireSession
	if doc.Session != nil {
		w = doc.Session
	}
	switch {
	case w.AccessToken == nil || *w.AccessToken == "":
		return nil, errors.New("decode session: accessToken missing")
	case w.RefreshToken == nil || *w.RefreshToken == "":
		return nil, errors.New("decode session: refreshToken missing")
	case w.AccessTokenExpiresIn == nil:
		return nil, errors.New("decode session: accessTokenExpiresIn missing")
	}
	secs, err := parseSeconds(string(*w.AccessTokenExpiresIn))
	if err != nil {
		return nil, fmt.Errorf("decode session: accessTokenExpiresIn: %w", err)
	}
	s := &Session{
		AccessToken:    NewSecret(*w.AccessToken),
		ExpiresIn:      secs,
		RefreshToken:   NewSecret(*w.RefreshToken),
		RefreshTokenID: w.RefreshTokenID,
	}
	if len(w.User) > 0 {
		var u struct {
			Roles []string `json:"roles"`
		}
		if json.Unmarshal(w.User, &u) == nil {
			s.UserRoles = u.Roles
		}
	}
	return s, nil
}

// parseSeconds reads a positive JSON number of seconds (integral or not).
func parseSeconds(n string) (time.Duration, error) {
	if i, err := strconv.ParseInt(n, 10, 64); err == nil {
		if i <= 0 {
			return 0, errors.New("not positive")
		}
		if i > maxExpiresInSeconds {
			return 0, errors.New("too large")
		}
		return time.Duration(i) * time.Second, nil
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil || math.IsNaN(f) {
		return 0, errors.New("not a number")
	}
	if f <= 0 {
		return 0, errors.New("not positive")
	}
	if f >= float64(maxExpiresInSeconds) {
		return 0, errors.New("too large")
	}
	d := time.Duration(f * float64(time.Second))
	if d <= 0 {
		return 0, errors.New("not positive")
	}
	return d, nil
}

// jsonErr strips what a decoding error could quote from its input. Syntax and type
// errors from encoding/json name a character, a type or an offset, never a value, but
// be explicit about what is kept.
func jsonErr(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at offset %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q: unexpected JSON %s", te.Field, te.Value)
	}
	return errors.New("invalid JSON")
}

// hasuraClaimsKey is the default Hasura claims namespace in a Hasura Auth JWT.
const hasuraClaimsKey = "https://hasura.io/jwt/claims"

// jwtClaims is what the cache reads from an access token, unverified.
type jwtClaims struct {
	Exp   time.Time // zero when the token has no usable exp
	Roles []string  // x-hasura-allowed-roles; nil when absent
}

// maxJWTLen bounds the work parseJWTClaims does on a hostile token.
const maxJWTLen = 64 << 10

// parseJWTClaims decodes a compact JWS's payload without verifying it and returns its
// exp and Hasura allowed roles. The claims namespace may also hold a JSON string
// (Hasura's claims_format stringified_json).
func parseJWTClaims(token string) (jwtClaims, error) {
	var c jwtClaims
	if len(token) > maxJWTLen {
		return c, errors.New("jwt too long")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, errors.New("jwt: not three dot-separated parts")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c, errors.New("jwt: payload is not base64url")
	}
	var p struct {
		Exp    json.RawMessage `json:"exp"`
		Claims json.RawMessage `json:"https://hasura.io/jwt/claims"`
	}
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	if err := d.Decode(&p); err != nil {
		return c, fmt.Errorf("jwt payload: %w", jsonErr(err))
	}
	if len(p.Exp) > 0 && p.Exp[0] != '"' { // NumericDate is a JSON number
		var n json.Number
		if json.Unmarshal(p.Exp, &n) == nil {
			// Below 1 s, a NumericDate would truncate to the epoch itself: no usable exp.
			if f, err := strconv.ParseFloat(string(n), 64); err == nil && f >= 1 && f < 1<<40 {
				sec, frac := math.Modf(f)
				c.Exp = time.Unix(int64(sec), int64(frac*1e9)).UTC()
			}
		}
	}
	claims := p.Claims
	var s string
	if json.Unmarshal(claims, &s) == nil {
		claims = []byte(s)
	}
	var h struct {
		Roles []string `json:"x-hasura-allowed-roles"`
	}
	if len(claims) > 0 && json.Unmarshal(claims, &h) == nil && h.Roles != nil {
		c.Roles = h.Roles
	}
	return c, nil
}
