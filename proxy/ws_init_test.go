package proxy

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const initJWT = "h.p.s"

func initAllowed(role string) bool { return role == "user" || role == "me" }

// initHeaders decodes out and returns payload.headers, failing the test when the
// message is not a connection_init with an object payload and headers.
func decodeInit(t *testing.T, out []byte) (top, payload map[string]any, headers map[string]any) {
	t.Helper()
	if err := json.Unmarshal(out, &top); err != nil {
		t.Fatalf("rewritten message %s is not JSON: %v", out, err)
	}
	if top["type"] != "connection_init" {
		t.Fatalf("rewritten type = %v; want connection_init", top["type"])
	}
	payload, ok := top["payload"].(map[string]any)
	if !ok {
		t.Fatalf("rewritten payload = %#v; want an object", top["payload"])
	}
	headers, ok = payload["headers"].(map[string]any)
	if !ok {
		t.Fatalf("rewritten payload.headers = %#v; want an object", payload["headers"])
	}
	return top, payload, headers
}

func TestRewriteConnectionInit(t *testing.T) {
	auth := map[string]any{"Authorization": "Bearer " + initJWT, "X-Hasura-Role": "user"}
	with := func(kv ...string) map[string]any {
		m := map[string]any{"Authorization": "Bearer " + initJWT, "X-Hasura-Role": "user"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name        string
		msg         string
		wantHeaders map[string]any
		wantRole    string
		wantPayload map[string]any // other payload keys (headers excluded); nil: none
		wantTop     map[string]any // other top-level keys (type, payload excluded); nil: none
	}{
		{
			name:        "stale credentials replaced, other keys kept",
			msg:         `{"type":"connection_init","id":"k","payload":{"lazy":true,"headers":{"Authorization":"Bearer stale","Cookie":"s=1","X-Hasura-User-Id":"9","x-hasura-admin-secret":"root","X-Custom":"keep"}}}`,
			wantHeaders: with("X-Custom", "keep"),
			wantRole:    "user",
			wantPayload: map[string]any{"lazy": true},
			wantTop:     map[string]any{"id": "k"},
		},
		{
			name:        "credentials in any case, duplicates too",
			msg:         `{"type":"connection_init","payload":{"headers":{"authorization":"a","AUTHORIZATION":"b","cOOkie":"c","X-HASURA-USER-ID":"1","x_hasura_role":"admin","Origin":"https://evil.example","X-Forwarded-For":"1.2.3.4"}}}`,
			wantHeaders: auth,
			wantRole:    "user",
		},
		{name: "no payload", msg: `{"type":"connection_init"}`, wantHeaders: auth, wantRole: "user"},
		{name: "null payload", msg: `{"type":"connection_init","payload":null}`, wantHeaders: auth, wantRole: "user"},
		{name: "string payload", msg: `{"type":"connection_init","payload":"token"}`, wantHeaders: auth, wantRole: "user"},
		{name: "array payload", msg: `{"type":"connection_init","payload":[1,2]}`, wantHeaders: auth, wantRole: "user"},
		{name: "null headers", msg: `{"type":"connection_init","payload":{"headers":null,"x":1}}`, wantHeaders: auth, wantRole: "user", wantPayload: map[string]any{"x": float64(1)}},
		{name: "string headers", msg: `{"type":"connection_init","payload":{"headers":"Bearer x"}}`, wantHeaders: auth, wantRole: "user"},
		{
			name:        "allowed role chosen in the payload",
			msg:         `{"type":"connection_init","payload":{"headers":{"x-hasura-role":"me"}}}`,
			wantHeaders: map[string]any{"Authorization": "Bearer " + initJWT, "X-Hasura-Role": "me"},
			wantRole:    "me",
		},
		{
			name:        "same role twice in two spellings",
			msg:         `{"type":"connection_init","payload":{"headers":{"x-hasura-role":"me","X-Hasura-Role":"me"}}}`,
			wantHeaders: map[string]any{"Authorization": "Bearer " + initJWT, "X-Hasura-Role": "me"},
			wantRole:    "me",
		},
		{name: "empty role counts as none", msg: `{"type":"connection_init","payload":{"headers":{"X-Hasura-Role":""}}}`, wantHeaders: auth, wantRole: "user"},
		{name: "null role counts as none", msg: `{"type":"connection_init","payload":{"headers":{"X-Hasura-Role":null}}}`, wantHeaders: auth, wantRole: "user"},
		{
			name:        "HTML characters and non-string header values kept as they are",
			msg:         `{"type":"connection_init","payload":{"headers":{"X-Custom":"<a&b>","X-Num":5}}}`,
			wantHeaders: map[string]any{"Authorization": "Bearer " + initJWT, "X-Hasura-Role": "user", "X-Custom": "<a&b>", "X-Num": float64(5)},
			wantRole:    "user",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, role, err := rewriteConnectionInit([]byte(tt.msg), initJWT, "user", initAllowed)
			if err != nil {
				t.Fatalf("rewriteConnectionInit() error = %v", err)
			}
			if role != tt.wantRole {
				t.Errorf("rewriteConnectionInit() role = %q; want %q", role, tt.wantRole)
			}
			top, payload, headers := decodeInit(t, out)
			if diff := cmp.Diff(tt.wantHeaders, headers); diff != "" {
				t.Errorf("payload.headers (-want +got):\n%s", diff)
			}
			delete(payload, "headers")
			if tt.wantPayload == nil {
				tt.wantPayload = map[string]any{}
			}
			if diff := cmp.Diff(tt.wantPayload, payload); diff != "" {
				t.Errorf("other payload keys (-want +got):\n%s", diff)
			}
			delete(top, "type")
			delete(top, "payload")
			if tt.wantTop == nil {
				tt.wantTop = map[string]any{}
			}
			if diff := cmp.Diff(tt.wantTop, top); diff != "" {
				t.Errorf("other message keys (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRewriteConnectionInitKeepsBytesOfOtherValues(t *testing.T) {
	msg := `{"type":"connection_init","payload":{"headers":{"X-Custom":"<a&b>"}}}`
	out, _, err := rewriteConnectionInit([]byte(msg), initJWT, "user", initAllowed)
	if err != nil {
		t.Fatalf("rewriteConnectionInit() error = %v", err)
	}
	const want = `{"payload":{"headers":{"Authorization":"Bearer h.p.s","X-Custom":"<a&b>","X-Hasura-Role":"user"}},"type":"connection_init"}`
	if string(out) != want {
		t.Fatalf("rewriteConnectionInit() = %s; want %s", out, want)
	}
}

func TestRewriteConnectionInitRefusals(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want *wsClose
	}{
		{"not JSON", `connection_init`, errInitNotObject},
		{"JSON array", `[{"type":"connection_init"}]`, errInitNotObject},
		{"JSON null", `null`, errInitNotObject},
		{"no type", `{"payload":{}}`, errInitNotObject},
		{"type not a string", `{"type":1}`, errInitNotObject},
		{"subscribe first", `{"type":"subscribe","id":"1","payload":{"query":"subscription { tick }"}}`, errInitFirst},
		{"apollo start first", `{"type":"start","id":"1","payload":{"query":"subscription { tick }"}}`, errInitFirst},
		{"role not allowed", `{"type":"connection_init","payload":{"headers":{"X-Hasura-Role":"admin"}}}`, errInitRole},
		{"role not allowed, lower case key", `{"type":"connection_init","payload":{"headers":{"x-hasura-role":"admin"}}}`, errInitRole},
		{"two different roles", `{"type":"connection_init","payload":{"headers":{"x-hasura-role":"me","X-HASURA-ROLE":"user"}}}`, errInitBadRole},
		{"role not a string", `{"type":"connection_init","payload":{"headers":{"x-hasura-role":["me"]}}}`, errInitBadRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := rewriteConnectionInit([]byte(tt.msg), initJWT, "user", initAllowed)
			var wc *wsClose
			if !errors.As(err, &wc) || wc != tt.want {
				t.Fatalf("rewriteConnectionInit(%s) = %s, %v; want %v", tt.msg, out, err, tt.want)
			}
		})
	}
}

func TestConnectionInitType(t *testing.T) {
	tests := []struct {
		msg, want string
		err       error
	}{
		{`{"type":"connection_init"}`, "connection_init", nil},
		{` {"type":"ping","payload":{}}`, "ping", nil},
		{`{"type":"subscribe"}`, "subscribe", nil},
		{`{}`, "", errInitNotObject},
		{`null`, "", errInitNotObject},
		{`"connection_init"`, "", errInitNotObject},
		{`{"type":null}`, "", errInitNotObject},
		{`{"type":"connection_init"`, "", errInitNotObject},
		{`{"TYPE":"ping"}`, "", errInitNotObject},
	}
	for _, tt := range tests {
		got, err := connectionInitType([]byte(tt.msg))
		if got != tt.want || err != tt.err {
			t.Errorf("connectionInitType(%s) = %q, %v; want %q, %v", tt.msg, got, err, tt.want, tt.err)
		}
	}
}

func FuzzRewriteConnectionInit(f *testing.F) {
	for _, s := range []string{
		`{"type":"connection_init"}`,
		`{"type":"connection_init","payload":null}`,
		`{"type":"connection_init","payload":"x"}`,
		`{"type":"connection_init","payload":{"headers":null}}`,
		`{"type":"connection_init","id":"k","payload":{"lazy":true,"headers":{"Authorization":"Bearer stale","Cookie":"s=1","X-Hasura-User-Id":"9","X-Custom":"keep"}}}`,
		`{"type":"connection_init","payload":{"headers":{"authorization":"a","AUTHORIZATION":"b","x_hasura_role":"admin"}}}`,
		`{"type":"connection_init","payload":{"headers":{"x-hasura-role":"me","X-Hasura-Role":"me"}}}`,
		`{"type":"connection_init","payload":{"headers":{"x-hasura-role":"admin"}}}`,
		`{"type":"connection_init","payload":{"headers":{"x-hasura-role":"me","X-HASURA-ROLE":"user"}}}`,
		`{"type":"connection_init","payload":{"headers":{"X-Hasura-Role":5}}}`,
		`{"type":"connection_init","type":"subscribe"}`,
		`{"type":"connection_init","payload":{"headers":{"Authorization":"x"},"headers":{"Cookie":"y"}}}`,
		`{"type":"subscribe","id":"1"}`,
		`[]`, `null`, `{`, "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, role, err := rewriteConnectionInit(msg, initJWT, "user", initAllowed)
		if err != nil {
			var wc *wsClose
			if !errors.As(err, &wc) || wc.code != closeBadRequest && wc.code != closeUnauthorized && wc.code != closeForbidden {
				t.Fatalf("rewriteConnectionInit(%q) error = %v; want a 4400, 4401 or 4403 close", msg, err)
			}
			return
		}
		if !initAllowed(role) {
			t.Fatalf("rewriteConnectionInit(%q) role = %q; not an allowed role", msg, role)
		}
		top, payload, headers := decodeInit(t, out)
		var auths, roles int
		for k, v := range headers {
			switch {
			case asciiEqualFold(k, "authorization"):
				auths++
				if v != "Bearer "+initJWT {
					t.Fatalf("rewritten %s: Authorization = %v", out, v)
				}
			case asciiEqualFold(k, "x-hasura-role"):
				roles++
				if v != role {
					t.Fatalf("rewritten %s: X-Hasura-Role = %v; want %q", out, v, role)
				}
			case strippedHeader(k):
				t.Fatalf("rewritten %s keeps the client's %q", out, k)
			}
		}
		if auths != 1 || roles != 1 {
			t.Fatalf("rewritten %s has %d Authorization and %d X-Hasura-Role keys; want one each", out, auths, roles)
		}
		// Everything else in the message is kept.
		var in map[string]any
		if err := json.Unmarshal(msg, &in); err != nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", msg, err)
		}
		for k, v := range in {
			if k != "payload" && !cmp.Equal(v, top[k]) {
				t.Fatalf("key %q: %v became %v", k, v, top[k])
			}
		}
		if inPayload, ok := in["payload"].(map[string]any); ok {
			for k, v := range inPayload {
				if k != "headers" && !cmp.Equal(v, payload[k]) {
					t.Fatalf("payload key %q: %v became %v", k, v, payload[k])
				}
			}
		}
	})
}
