package dxtratest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
)

func FuzzInitHeaders(f *testing.F) {
	for _, s := range []string{
		`{"headers":{"Authorization":"Bearer x","x-hasura-role":"me"}}`,
		`{"headers":{"authorization":"a","AUTHORIZATION":"b"}}`,
		`{"headers":{"n":1,"o":null,"p":{"q":"r"}}}`,
		`{"headers":null}`, `{"headers":"x"}`, `null`, `[]`, `"x"`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	upgrade := http.Header{"Sec-Websocket-Key": {"k"}, "Authorization": {"Bearer upgrade"}, "Connection": {"Upgrade"}}
	f.Fuzz(func(t *testing.T, payload []byte) {
		h := initHeaders(payload, upgrade)
		if len(h.Values("Sec-Websocket-Key")) != 0 || len(h.Values("Connection")) != 0 {
			t.Fatalf("initHeaders kept handshake headers: %v", h)
		}
		authz := h.Values("Authorization")
		if len(authz) == 0 || authz[len(authz)-1] != "Bearer upgrade" {
			t.Fatalf("upgrade Authorization not last: %v", authz)
		}
		var p struct {
			Headers map[string]any `json:"headers"`
		}
		if json.Unmarshal(payload, &p) != nil {
			return
		}
		for k, v := range p.Headers {
			sv, ok := v.(string)
			if !ok {
				continue
			}
			found := false
			for _, got := range h.Values(k) {
				found = found || got == sv
			}
			if !found {
				t.Fatalf("payload header %q=%q missing from %v", k, sv, h)
			}
		}
	})
}

func BenchmarkAPIGraphQL(b *testing.B) {
	s := NewServer(Options{RecordLimit: -1})
	defer s.Close()
	iat := s.now().Unix()
	tok := s.mint(iat)
	h := s.APIHandler()
	body := []byte(`{"query":"query { dataControllers { id title } }"}`)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, "/v1/graphql", bytesReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		w := discardWriter{h: http.Header{}}
		h.ServeHTTP(&w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
