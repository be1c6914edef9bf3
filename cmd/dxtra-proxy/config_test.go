package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// knownPAT is pushed through every error path; it must never be printed.
const knownPAT = "5f0c6a1e-7b2d-4c8e-9a3f-1d2e3f4a5b6c"

func TestConfigErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n\t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "pat")
	if err := os.WriteFile(good, []byte(knownPAT+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withPAT := func(kv ...string) map[string]string {
		m := map[string]string{"DXTRA_PAT": knownPAT}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantVar string
	}{
		{"no PAT", map[string]string{}, nil, "DXTRA_PAT"},
		{"empty PAT", map[string]string{"DXTRA_PAT": ""}, nil, "DXTRA_PAT"},
		{"both PAT and file", withPAT("DXTRA_PAT_FILE", good), nil, "DXTRA_PAT"},
		{"PAT file missing", map[string]string{"DXTRA_PAT_FILE": filepath.Join(dir, "nope")}, nil, "DXTRA_PAT_FILE"},
		{"PAT file empty", map[string]string{"DXTRA_PAT_FILE": empty}, nil, "DXTRA_PAT_FILE"},
		{"token without PAT", map[string]string{}, []string{"token"}, "DXTRA_PAT"},
		{"auth URL not a URL", withPAT("DXTRA_AUTH_URL", "auth.dxtra.ai"), nil, "DXTRA_AUTH_URL"},
		{"auth URL plain http to a remote host", withPAT("DXTRA_AUTH_URL", "http://auth.example.com"), nil, "DXTRA_AUTH_URL"},
		{"API URL bad scheme", withPAT("DXTRA_API_URL", "ftp://api.example.com"), nil, "DXTRA_API_URL"},
		{"API URL with credentials", withPAT("DXTRA_API_URL", "https://u:p@api.example.com"), nil, "DXTRA_API_URL"},
		{"auth prefix without slash", withPAT("DXTRA_AUTH_API_PREFIX", "v1"), nil, "DXTRA_AUTH_API_PREFIX"},
		{"empty role", withPAT("DXTRA_ROLE", ""), nil, "DXTRA_ROLE"},
		{"empty allowed roles", withPAT("DXTRA_ALLOWED_ROLES", ""), nil, "DXTRA_ALLOWED_ROLES"},
		{"two roles in DXTRA_ROLE", withPAT("DXTRA_ROLE", "user,me"), nil, "DXTRA_ROLE"},
		{"duplicate allowed role", withPAT("DXTRA_ALLOWED_ROLES", "user,me,user"), nil, "DXTRA_ALLOWED_ROLES"},
		{"null origin", withPAT("DXTRA_ALLOWED_ORIGINS", "null"), nil, "DXTRA_ALLOWED_ORIGINS"},
		{"allowed roles with a hole", withPAT("DXTRA_ALLOWED_ROLES", "user,,me"), nil, "DXTRA_ALLOWED_ROLES"},
		{"listen addr without port", withPAT("DXTRA_LISTEN_ADDR", "127.0.0.1"), nil, "DXTRA_LISTEN_ADDR"},
		{"listen unix without path", withPAT("DXTRA_LISTEN_ADDR", "unix:"), nil, "DXTRA_LISTEN_ADDR"},
		{"admin addr hostname", withPAT("DXTRA_ADMIN_ADDR", "example.com:9090"), nil, "DXTRA_ADMIN_ADDR"},
		{"same listen and admin", withPAT("DXTRA_LISTEN_ADDR", "127.0.0.1:8080", "DXTRA_ADMIN_ADDR", "127.0.0.1:8080"), nil, "DXTRA_ADMIN_ADDR"},
		{"refresh before not a duration", withPAT("DXTRA_REFRESH_BEFORE", "soon"), nil, "DXTRA_REFRESH_BEFORE"},
		{"refresh before zero", withPAT("DXTRA_REFRESH_BEFORE", "0s"), nil, "DXTRA_REFRESH_BEFORE"},
		{"upstream timeout negative", withPAT("DXTRA_UPSTREAM_TIMEOUT", "-1s"), nil, "DXTRA_UPSTREAM_TIMEOUT"},
		{"shutdown delay negative", withPAT("DXTRA_SHUTDOWN_DELAY", "-5s"), nil, "DXTRA_SHUTDOWN_DELAY"},
		{"shutdown timeout zero", withPAT("DXTRA_SHUTDOWN_TIMEOUT", "0"), nil, "DXTRA_SHUTDOWN_TIMEOUT"},
		{"max body zero", withPAT("DXTRA_MAX_BODY_BYTES", "0"), nil, "DXTRA_MAX_BODY_BYTES"},
		{"max body not a number", withPAT("DXTRA_MAX_BODY_BYTES", "1MB"), nil, "DXTRA_MAX_BODY_BYTES"},
		{"allowed hosts empty", withPAT("DXTRA_ALLOWED_HOSTS", ""), nil, "DXTRA_ALLOWED_HOSTS"},
		{"allowed hosts with scheme", withPAT("DXTRA_ALLOWED_HOSTS", "http://localhost"), nil, "DXTRA_ALLOWED_HOSTS"},
		{"allowed origins with path", withPAT("DXTRA_ALLOWED_ORIGINS", "https://app.example.com/x"), nil, "DXTRA_ALLOWED_ORIGINS"},
		{"allowed origins without scheme", withPAT("DXTRA_ALLOWED_ORIGINS", "app.example.com"), nil, "DXTRA_ALLOWED_ORIGINS"},
		{"enable quit not a bool", withPAT("DXTRA_ENABLE_QUIT", "yes please"), nil, "DXTRA_ENABLE_QUIT"},
		{"CA file missing", withPAT("DXTRA_CA_FILE", filepath.Join(dir, "ca.pem")), nil, "DXTRA_CA_FILE"},
		{"CA file not PEM", withPAT("DXTRA_CA_FILE", good), nil, "DXTRA_CA_FILE"},
		{"log level", withPAT("DXTRA_LOG_LEVEL", "verbose"), nil, "DXTRA_LOG_LEVEL"},
		{"log format", withPAT("DXTRA_LOG_FORMAT", "xml"), nil, "DXTRA_LOG_FORMAT"},
		// A PAT pasted into the wrong variable must not be echoed back.
		{"PAT pasted into a number", withPAT("DXTRA_MAX_BODY_BYTES", knownPAT), nil, "DXTRA_MAX_BODY_BYTES"},
		{"PAT pasted into a duration", withPAT("DXTRA_REFRESH_BEFORE", knownPAT), nil, "DXTRA_REFRESH_BEFORE"},
		{"PAT pasted into a URL", withPAT("DXTRA_AUTH_URL", knownPAT), nil, "DXTRA_AUTH_URL"},
		{"unknown command", withPAT(), []string{"frobnicate"}, "frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runBinary(t, tt.env, tt.args...)
			if code != 2 {
				t.Fatalf("exit code = %d; want 2\nstderr: %s", code, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, tt.wantVar) {
				t.Errorf("last stderr line = %q; want it to name %s", last, tt.wantVar)
			}
			if strings.Contains(stdout+stderr, knownPAT) {
				t.Errorf("output contains the PAT:\nstdout: %s\nstderr: %s", stdout, stderr)
			}
		})
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	stdout, stderr, code := runBinary(t, map[string]string{"DXTRA_PAT": knownPAT}, "-h")
	if code != 0 {
		t.Fatalf("-h exit code = %d; want 0; stderr: %s", code, stderr)
	}
	if strings.Contains(stdout+stderr, knownPAT) {
		t.Fatalf("-h output contains the PAT")
	}
	typ := reflect.TypeFor[config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("envconfig")
		if name == "" {
			continue
		}
		line := lineWith(stdout, "DXTRA_"+name+" ")
		if line == "" {
			t.Errorf("-h does not list DXTRA_%s", name)
			continue
		}
		if def := f.Tag.Get("default"); def != "" && !strings.Contains(line, def) {
			t.Errorf("-h line %q lacks the default %q", line, def)
		}
	}
}

func lineWith(text, sub string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

func TestVersion(t *testing.T) {
	stdout, _, code := runBinary(t, nil, "version")
	if code != 0 || !strings.HasPrefix(stdout, "dxtra-proxy dev (commit unknown, go1.") {
		t.Fatalf("version = %q, exit %d; want the version, commit and Go version", stdout, code)
	}
}
