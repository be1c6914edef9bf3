package tokencache

import (
	"slices"
	"time"
)

// Token is one access token as the cache serves it. It is immutable (do not modify
// Roles); share it freely across goroutines.
type Token struct {
	Value       Secret
	Expiry      time.Time // earlier of the JWT exp and arrival + accessTokenExpiresIn
	UsableUntil time.Time // Expiry − min(5 s, 10 % of lifetime): never served at or after this
	IssuedAt    time.Time // arrival time
	Roles       []string  // JWT x-hasura-allowed-roles, else session user.roles; nil = unknown
}

// Usable reports whether t may still be sent upstream at now: it holds a value and now
// is before UsableUntil.
func (t Token) Usable(now time.Time) bool {
	return !t.Value.IsZero() && now.Before(t.UsableUntil)
}

// skewMargin is the part of a token's life never used: Hasura allows no clock skew.
const skewMargin = 5 * time.Second

// newToken builds the served token from a session that arrived at arrival.
func newToken(s *Session, arrival time.Time) Token {
	expiry := arrival.Add(s.ExpiresIn)
	roles := s.UserRoles
	if c, err := parseJWTClaims(s.AccessToken.Reveal()); err == nil {
		if !c.Exp.IsZero() && c.Exp.Before(expiry) {
			expiry = c.Exp
		}
		if c.Roles != nil {
			roles = c.Roles
		}
	}
	return Token{
		Value:       s.AccessToken,
		Expiry:      expiry,
		UsableUntil: usableUntil(arrival, expiry),
		IssuedAt:    arrival,
		Roles:       slices.Clip(roles),
	}
}

// usableUntil is expiry − min(5 s, 10 % of the lifetime issued→expiry). A token that
// arrived already expired is never usable.
func usableUntil(issued, expiry time.Time) time.Time {
	life := expiry.Sub(issued)
	if life <= 0 {
		return expiry // at or before arrival: never usable
	}
	return expiry.Add(-min(skewMargin, life/10))
}

// renewAt is when the loop renews t: expiry − min(refreshBefore, lifetime/2).
func renewAt(t Token, refreshBefore time.Duration) time.Time {
	life := t.Expiry.Sub(t.IssuedAt)
	if life <= 0 {
		return t.IssuedAt
	}
	return t.Expiry.Add(-min(refreshBefore, life/2))
}
