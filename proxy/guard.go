package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ParseRoleList parses a comma-separated list of Hasura role names, as
// DXTRA_ALLOWED_ROLES holds it: items are trimmed of spaces and tabs; an empty item, a
// duplicate, or a role containing whitespace, a control character or a comma is an
// error, and so is a list with no item at all. It is safe for concurrent use.
func ParseRoleList(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty role list")
	}
	var roles []string
	for item := range strings.SplitSeq(s, ",") {
		r := strings.Trim(item, " \t")
		if err := checkRole(r); err != nil {
			return nil, err
		}
		for _, seen := range roles {
			if seen == r {
				return nil, fmt.Errorf("duplicate role %q", r)
			}
		}
		roles = append(roles, r)
	}
	return roles, nil
}

// checkRole reports whether r can be sent as an X-Hasura-Role value and compared with
// a caller's choice: non-empty, no whitespace, no control bytes.
func checkRole(r string) error {
	if r == "" {
		return errors.New("empty role name")
	}
	for i := 0; i < len(r); i++ {
		if c := r[i]; c <= ' ' || c == 0x7f || c == ',' {
			return fmt.Errorf("role %q: invalid character %q", r, c)
		}
	}
	return nil
}

// MatchHost reports whether the Host header value host names one of allowed, as the
// DNS-rebinding guard does: the port is ignored on both sides, comparison is ASCII
// case-insensitive, IPv6 literals may be bracketed, one trailing dot is ignored, and an
// allowed entry "*" matches every host. A malformed host matches only "*". It is safe
// for concurrent use.
func MatchHost(host string, allowed []string) bool {
	name, ok := hostName(host)
	for _, a := range allowed {
		a = strings.TrimSpace(a)
		if a == "*" {
			return true
		}
		if an, aok := hostName(a); ok && aok && an != "" && asciiEqualFold(name, an) {
			return true
		}
	}
	return false
}

// hostName returns the host part of a Host header value: without port, brackets and
// one trailing dot. ok is false for a malformed value (an unclosed bracket, garbage
// after "]", a non-numeric port).
func hostName(h string) (name string, ok bool) {
	if h == "" {
		return "", false
	}
	if h[0] == '[' {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", false
		}
		if rest := h[end+1:]; rest != "" && (rest[0] != ':' || !allDigits(rest[1:])) {
			return "", false
		}
		h = h[1:end]
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h, ':') == i {
		// Exactly one colon: host:port. More than one: a bare IPv6 literal.
		if !allDigits(h[i+1:]) {
			return "", false
		}
		h = h[:i]
	}
	if n := len(h); n > 1 && h[n-1] == '.' {
		h = h[:n-1]
	}
	return h, h != ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// MatchOrigin reports whether the Origin header value origin is one of allowed,
// compared byte for byte (browsers serialise origins in lower case without default
// ports; New normalises configured origins the same way). "null" never matches. It is
// safe for concurrent use.
func MatchOrigin(origin string, allowed []string) bool {
	if origin == "" || origin == "null" {
		return false
	}
	for _, a := range allowed {
		if a == origin {
			return true
		}
	}
	return false
}

// NormalizeOrigin checks that s is a browser origin, scheme://host[:port] with no path,
// query, fragment or user info, and returns it the way browsers serialise it: scheme
// and host in lower case, the default port (80 for http, 443 for https) dropped. "null"
// is refused. It is safe for concurrent use.
func NormalizeOrigin(s string) (string, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return "", fmt.Errorf("origin %q: want scheme://host[:port]", s)
	}
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
			i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return "", fmt.Errorf("origin %q: invalid scheme", s)
		}
	}
	if rest == "" || strings.ContainsAny(rest, "/?#@ \t\\") {
		return "", fmt.Errorf("origin %q: want scheme://host[:port] with no path", s)
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; c < 0x21 || c >= 0x7f {
			return "", fmt.Errorf("origin %q: invalid character in host", s)
		}
	}
	// An IPv6 host needs brackets in an origin: a bare one ("0:a:443") would be
	// read as host:port once its default port is dropped.
	if rest[0] != '[' && strings.Count(rest, ":") > 1 {
		return "", fmt.Errorf("origin %q: invalid host", s)
	}
	host, port, hasPort := rest, "", false
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		host, port, hasPort = rest[:i], rest[i+1:], true
	}
	// No empty host or port, and no trailing dot on the host, with or without a port:
	// "https://a.:443" would otherwise normalise to "https://a.", which this refuses.
	if _, ok := hostName(rest); !ok || host == "" || strings.HasSuffix(host, ".") || hasPort && port == "" {
		return "", fmt.Errorf("origin %q: invalid host", s)
	}
	scheme = strings.ToLower(scheme)
	rest = strings.ToLower(rest)
	if (scheme == "http" && strings.HasSuffix(rest, ":80")) || (scheme == "https" && strings.HasSuffix(rest, ":443")) {
		rest = rest[:strings.LastIndexByte(rest, ':')]
	}
	return scheme + "://" + rest, nil
}

// hasDotSegment reports whether the decoded path p has a "." or ".." segment; a
// backslash counts as a separator too, as some servers treat it as one.
func hasDotSegment(p string) bool {
	start := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' || p[i] == '\\' {
			if seg := p[start:i]; seg == "." || seg == ".." {
				return true
			}
			start = i + 1
		}
	}
	return false
}

// asciiEqualFold reports whether s and t are equal under ASCII case folding.
func asciiEqualFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if a == b {
			continue
		}
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// headerFoldPrefix reports whether header name k starts with pat (lower case, '-'
// separated), ignoring ASCII case and treating '_' as '-'.
func headerFoldPrefix(k, pat string) bool {
	if len(k) < len(pat) {
		return false
	}
	for i := 0; i < len(pat); i++ {
		c := k[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != pat[i] {
			return false
		}
	}
	return true
}

// headerFoldEqual is headerFoldPrefix for the whole name.
func headerFoldEqual(k, pat string) bool {
	return len(k) == len(pat) && headerFoldPrefix(k, pat)
}

// strippedHeader reports whether the caller's header named k must not reach the
// upstream (SPEC behaviour 2): credentials, Hasura session headers, forwarding
// information and Origin. Any ASCII case; '_' stands for '-' as some servers fold it.
func strippedHeader(k string) bool {
	switch len(k) {
	case 6:
		return headerFoldEqual(k, "cookie") || headerFoldEqual(k, "origin")
	case 9:
		if headerFoldEqual(k, "forwarded") || headerFoldEqual(k, "x-real-ip") {
			return true
		}
	case 13:
		if headerFoldEqual(k, "authorization") {
			return true
		}
	case 19:
		if headerFoldEqual(k, "proxy-authorization") {
			return true
		}
	}
	return headerFoldPrefix(k, "x-hasura-") || headerFoldPrefix(k, "x-forwarded-")
}

// stripHeaders deletes every header strippedHeader names, whatever its spelling.
func stripHeaders(h http.Header) {
	for k := range h {
		if strippedHeader(k) {
			delete(h, k)
		}
	}
}

// isWebSocketUpgrade reports whether r asks for a WebSocket upgrade.
func isWebSocketUpgrade(h http.Header) bool {
	for _, v := range h["Upgrade"] {
		if asciiEqualFold(strings.TrimSpace(v), "websocket") {
			return true
		}
	}
	return false
}

// corsBaseHeaders are always allowed in a preflight answer.
const corsBaseHeaders = "Content-Type, X-Hasura-Role"

// corsAllowHeaders builds Access-Control-Allow-Headers for a preflight that asked for
// requested (the values of Access-Control-Request-Headers): the base pair plus every
// requested header that is a valid token, not already listed, and not one the proxy
// strips or that is hop-by-hop.
func corsAllowHeaders(requested []string) string {
	var b strings.Builder
	b.WriteString(corsBaseHeaders)
	for _, v := range requested {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.Trim(name, " \t")
			if !safeRequestHeader(name) {
				continue
			}
			b.WriteString(", ")
			b.WriteString(name)
		}
	}
	return b.String()
}

func safeRequestHeader(name string) bool {
	if name == "" || !isToken(name) || strippedHeader(name) {
		return false
	}
	for _, no := range [...]string{"content-type", "connection", "upgrade", "te", "trailer",
		"transfer-encoding", "keep-alive", "proxy-connection", "host", "content-length", "expect"} {
		if headerFoldEqual(name, no) {
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
