package dxtratest

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ClaimsNamespace is the JWT claim that holds Hasura's session claims (a constant).
const ClaimsNamespace = "https://hasura.io/jwt/claims"

// Issuer is the iss claim of every token the fake issues (a constant).
const Issuer = "hasura-auth"

// mint signs an access token issued at iat with the current key. Claims are exactly
// those of Hasura Auth (a MapClaims encodes keys in the same alphabetical order).
func (s *Server) mint(iat int64) string {
	k := s.key.Load()
	claims := jwt.MapClaims{
		"exp": iat + s.ttlSec,
		ClaimsNamespace: map[string]any{
			"x-hasura-allowed-roles":     s.roles,
			"x-hasura-default-role":      s.defaultRole,
			"x-hasura-user-id":           s.userID,
			"x-hasura-user-is-anonymous": "false",
		},
		"iat": iat,
		"iss": Issuer,
		"sub": s.userID,
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(k.b)
	if err != nil {
		panic("dxtratest: signing a token: " + err.Error())
	}
	return tok
}

// tokenInfo is what the API needs from a token whose signature has been verified.
type tokenInfo struct {
	gen         uint64
	exp         time.Time
	roles       []string
	defaultRole string
}

// jwtError is a verification failure with Hasura's code and message.
type jwtError struct {
	code    string // "invalid-jwt", "jwt-missing-role-claims", "jwt-invalid-claims"
	message string
}

var (
	errJWTExpired      = &jwtError{"invalid-jwt", "Could not verify JWT: JWTExpired"}
	errJWTBadSignature = &jwtError{"invalid-jwt", "Could not verify JWT: JWSError JWSInvalidSignature"}
)

// verify checks a raw JWT like Hasura: signature with the current key (HS256 only),
// then exp with zero skew, then the role claims. Verified tokens are cached per key
// generation, so the happy path costs a map lookup.
func (s *Server) verify(raw string, now time.Time) (*tokenInfo, *jwtError) {
	if _, revoked := s.revoked.Load(raw); revoked {
		return nil, errJWTBadSignature
	}
	k := s.key.Load()
	var info *tokenInfo
	if v, ok := s.verified.Load(raw); ok && v.(*tokenInfo).gen == k.gen {
		info = v.(*tokenInfo)
	} else {
		var jerr *jwtError
		info, jerr = parseToken(raw, k)
		if jerr != nil {
			return nil, jerr
		}
		s.verified.Store(raw, info)
	}
	if !now.Before(info.exp) {
		return nil, errJWTExpired
	}
	return info, nil
}

func parseToken(raw string, k *signingKey) (*tokenInfo, *jwtError) {
	if n := strings.Count(raw, ".") + 1; n != 3 {
		return nil, &jwtError{"invalid-jwt", "Could not verify JWT: JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got " + strconv.Itoa(n) + ")"}
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return k.b, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithoutClaimsValidation(),
		jwt.WithJSONNumber())
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return nil, errJWTBadSignature
	default:
		return nil, &jwtError{"invalid-jwt", "Could not verify JWT: JWSError (CompactDecodeError Base64Error)"}
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, &jwtError{"invalid-jwt", "Could not verify JWT: JWTClaimsSetDecodeError \"exp\""}
	}
	ns, ok := claims[ClaimsNamespace].(map[string]any)
	if !ok {
		return nil, &jwtError{"jwt-missing-role-claims", "JWT claim does not contain x-hasura-allowed-roles"}
	}
	list, ok := ns["x-hasura-allowed-roles"].([]any)
	if !ok {
		return nil, &jwtError{"jwt-missing-role-claims", "JWT claim does not contain x-hasura-allowed-roles"}
	}
	roles := make([]string, 0, len(list))
	for _, r := range list {
		rs, ok := r.(string)
		if !ok {
			return nil, &jwtError{"jwt-invalid-claims", "invalid x-hasura-allowed-roles; should be a list of roles"}
		}
		roles = append(roles, rs)
	}
	def, ok := ns["x-hasura-default-role"].(string)
	if !ok {
		return nil, &jwtError{"jwt-missing-role-claims", "JWT claim does not contain x-hasura-default-role"}
	}
	return &tokenInfo{gen: k.gen, exp: exp.Time, roles: roles, defaultRole: def}, nil
}
