package dxtratest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSlowHonoursRequestContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/slow?delay=1h", nil)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		serveSlow(rec, req)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("serveSlow did not return after its request context ended")
	}
	if rec.Body.Len() != 0 {
		t.Errorf("serveSlow wrote %q after cancellation; want nothing", rec.Body.String())
	}
}

func TestFirstField(t *testing.T) {
	tests := []struct {
		name, q, want string
		ok            bool
	}{
		{"anonymous", "{ users { id } }", "users", true},
		{"named", "query Q($a: Int) {\n  __typename\n}", "__typename", true},
		{"digits", "{a1_b}", "a1_b", true},
		{"no brace", "query", "", false},
		{"empty selection", "{ }", "", false},
		{"digit first", "{ 1a }", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := firstField(tc.q)
			if got != tc.want || ok != tc.ok {
				t.Errorf("firstField(%q) = %q, %v; want %q, %v", tc.q, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzAnswerQuery(f *testing.F) {
	for _, s := range []string{"{ dataControllers { id title } }", "{ __typename }", "query { x }", "", "{", "{ 9 }", "subscription { tick }"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		code, result := answerQuery(q)
		if code == "" && !strings.HasPrefix(result, `{"data":`) {
			t.Fatalf("answerQuery(%q) = %q without an error code", q, result)
		}
		if field, ok := firstField(q); ok && !strings.Contains(q, field) {
			t.Fatalf("firstField(%q) = %q, not in the query", q, field)
		}
	})
}
