package tokencache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const knownSecret = "4f2b9c1e-7d3a-4e8b-9a6f-1c2d3e4f5a6b"

// knownFingerprint is sha256(knownSecret)[:4] in hex, computed independently:
// printf %s 4f2b9c1e-7d3a-4e8b-9a6f-1c2d3e4f5a6b | sha256sum | cut -c1-8
const knownFingerprint = "sha256:0df3b117"

func TestSecretPrinting(t *testing.T) {
	s := NewSecret(knownSecret)
	if got := s.Fingerprint(); got != knownFingerprint {
		t.Fatalf("Fingerprint() = %q; want %q", got, knownFingerprint)
	}
	type holder struct {
		Exported   Secret
		unexported Secret
	}
	h := holder{Exported: s, unexported: s}
	tests := []struct {
		name string
		got  func() string
		want string // "" means: must contain the fingerprint, not the secret
	}{
		{"String", s.String, knownFingerprint},
		{"GoString", s.GoString, knownFingerprint},
		{"%v", func() string { return fmt.Sprintf("%v", s) }, knownFingerprint},
		{"%+v", func() string { return fmt.Sprintf("%+v", s) }, knownFingerprint},
		{"%#v", func() string { return fmt.Sprintf("%#v", s) }, knownFingerprint},
		{"%s", func() string { return fmt.Sprintf("%s", s) }, knownFingerprint},
		{"%q", func() string { return fmt.Sprintf("%q", s) }, knownFingerprint},
		{"%x", func() string { return fmt.Sprintf("%x", s) }, knownFingerprint},
		{"%X", func() string { return fmt.Sprintf("%X", s) }, knownFingerprint},
		{"%d", func() string { return fmt.Sprintf("%d", s) }, knownFingerprint},
		{"pointer %v", func() string { return fmt.Sprintf("%v", &s) }, knownFingerprint},
		{"in struct %+v", func() string { return fmt.Sprintf("%+v", h) }, ""},
		{"in struct %#v", func() string { return fmt.Sprintf("%#v", h) }, ""},
		{"in slice %v", func() string { return fmt.Sprint([]Secret{s}) }, "[" + knownFingerprint + "]"},
		{"MarshalJSON", func() string { b, _ := json.Marshal(s); return string(b) }, `"` + knownFingerprint + `"`},
		{"json in struct", func() string { b, _ := json.Marshal(h); return string(b) }, `{"Exported":"` + knownFingerprint + `"}`},
		{"MarshalText", func() string { b, _ := s.MarshalText(); return string(b) }, knownFingerprint},
		{"slog", func() string {
			var buf bytes.Buffer
			slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "secret", s)
			return buf.String()
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.got()
			if strings.Contains(got, knownSecret) || strings.Contains(got, fmt.Sprintf("%x", knownSecret)) {
				t.Fatalf("output %q reveals the secret", got)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
			if tt.want == "" && !strings.Contains(got, knownFingerprint) {
				t.Errorf("got %q; want it to contain %q", got, knownFingerprint)
			}
		})
	}
}

func TestSecretZap(t *testing.T) {
	s := NewSecret(knownSecret)
	type holder struct{ Token Secret }
	fields := map[string]zap.Field{
		"Any":            zap.Any("secret", s),
		"Stringer":       zap.Stringer("secret", s),
		"Reflect":        zap.Reflect("secret", s),
		"Any struct":     zap.Any("secret", holder{s}),
		"Reflect struct": zap.Reflect("secret", holder{s}),
	}
	encoders := map[string]zapcore.Encoder{
		"json":    zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		"console": zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
	}
	for fname, f := range fields {
		for ename, enc := range encoders {
			t.Run(fname+"/"+ename, func(t *testing.T) {
				var buf bytes.Buffer
				log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(&buf), zap.DebugLevel))
				log.Info("msg", f)
				got := buf.String()
				if strings.Contains(got, knownSecret) {
					t.Fatalf("log line %q reveals the secret", got)
				}
				if !strings.Contains(got, knownFingerprint) {
					t.Errorf("log line %q; want it to contain %q", got, knownFingerprint)
				}
			})
		}
	}
}

func TestSecretBasics(t *testing.T) {
	var zero Secret
	tests := []struct {
		name   string
		s      Secret
		zero   bool
		reveal string
		print  string
	}{
		{"zero value", zero, true, "", "<empty>"},
		{"empty string", NewSecret(""), true, "", "<empty>"},
		{"value", NewSecret(knownSecret), false, knownSecret, knownFingerprint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.IsZero(); got != tt.zero {
				t.Errorf("IsZero() = %v; want %v", got, tt.zero)
			}
			if got := tt.s.Reveal(); got != tt.reveal {
				t.Errorf("Reveal() = %q; want %q", got, tt.reveal)
			}
			if got := fmt.Sprint(tt.s); got != tt.print {
				t.Errorf("Sprint() = %q; want %q", got, tt.print)
			}
		})
	}
	if !NewSecret("a").Equal(NewSecret("a")) || NewSecret("a").Equal(NewSecret("b")) || !zero.Equal(NewSecret("")) {
		t.Error("Equal compares values incorrectly")
	}
}
