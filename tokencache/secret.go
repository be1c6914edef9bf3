package tokencache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
)

// Secret holds a credential: a PAT, an access token or a refresh token.
//
// Every way of printing it — String, GoString, every fmt verb (%v %+v %#v %s %q %x ...),
// MarshalJSON, MarshalText, slog and zap (zap.Any, zap.Stringer, zap.Reflect) — shows
// only "sha256:" and the first 8 hex digits of the SHA-256 of the value; the zero Secret
// prints "<empty>". The raw value is reachable only through [Secret.Reveal]. The value
// sits behind a pointer, so even reflection-based printing of a struct holding a Secret
// in an unexported field shows an address, not the credential.
//
// A Secret is immutable and safe for concurrent use.
type Secret struct {
	v *secretValue
}

type secretValue struct {
	raw         string
	fingerprint string
}

const emptySecret = "<empty>"

// NewSecret wraps s. An empty s gives the zero Secret.
func NewSecret(s string) Secret {
	if s == "" {
		return Secret{}
	}
	sum := sha256.Sum256([]byte(s))
	return Secret{v: &secretValue{raw: s, fingerprint: "sha256:" + hex.EncodeToString(sum[:4])}}
}

// Reveal returns the raw value. Call it only where a request header or body is built.
func (s Secret) Reveal() string {
	if s.v == nil {
		return ""
	}
	return s.v.raw
}

// IsZero reports whether s holds no value.
func (s Secret) IsZero() bool { return s.v == nil }

// Fingerprint returns "sha256:" and the first 8 hex digits of the SHA-256 of the value
// (e.g. "sha256:1a2b3c4d"), or "<empty>" for the zero Secret. It is safe to log.
func (s Secret) Fingerprint() string {
	if s.v == nil {
		return emptySecret
	}
	return s.v.fingerprint
}

// Equal reports whether s and o hold the same value.
func (s Secret) Equal(o Secret) bool { return s.Reveal() == o.Reveal() }

// String returns the fingerprint.
func (s Secret) String() string { return s.Fingerprint() }

// GoString returns the fingerprint (for %#v).
func (s Secret) GoString() string { return s.Fingerprint() }

// Format writes the fingerprint for every verb and flag, so that no fmt verb (%x
// included) can reach the raw value.
func (s Secret) Format(f fmt.State, _ rune) {
	_, _ = io.WriteString(f, s.Fingerprint())
}

// MarshalJSON encodes the fingerprint as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.Fingerprint()) }

// MarshalText returns the fingerprint.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.Fingerprint()), nil }

// LogValue returns the fingerprint for log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.Fingerprint()) }
