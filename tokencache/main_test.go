package tokencache

import (
	"encoding/base64"
	"encoding/json"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// makeJWT builds an unsigned-looking compact JWS with the given payload claims; the
// cache never verifies signatures.
func makeJWT(t testing.TB, claims map[string]any) string {
	t.Helper()
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc(p) + ".c2lnbmF0dXJl"
}

// hasuraClaims is the payload Hasura Auth issues (PROTOCOL.md appendix).
func hasuraClaims(exp int64, roles ...string) map[string]any {
	return map[string]any{
		"exp": exp,
		"iat": exp - 900,
		"iss": "hasura-auth",
		"sub": "0b6bd1b4-4c3a-4f1e-9a8e-5f2a7d3c1e00",
		hasuraClaimsKey: map[string]any{
			"x-hasura-allowed-roles":     roles,
			"x-hasura-default-role":      "user",
			"x-hasura-user-id":           "0b6bd1b4-4c3a-4f1e-9a8e-5f2a7d3c1e00",
			"x-hasura-user-is-anonymous": "false",
		},
	}
}
