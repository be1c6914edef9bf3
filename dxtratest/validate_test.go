package dxtratest

import (
	"encoding/json"
	"strings"
	"testing"
)

func FuzzValidateRequest(f *testing.F) {
	seeds := []string{
		`{"personalAccessToken":"0f0f0f0f-0000-4000-8000-000000000000"}`,
		`{"personalAccessToken":" 0f0f0f0f-0000-4000-8000-000000000000\n"}`,
		`{"personalAccessToken":"not-a-uuid"}`,
		`{"personalAccessToken":123}`,
		`{"personalAccessToken":null}`,
		`{"personalAccessToken":"0f0f0f0f-0000-4000-8000-000000000000","extra":1}`,
		`{}`, `[]`, `null`, `"x"`, ``, ` `, `garbage`, `{"personalAccessToken":`,
		`{"refreshToken":"0f0f0f0f-0000-4000-8000-000000000000"}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		value, errText := validateRequest("SignInPATRequest", "personalAccessToken", body)
		if (value == "") == (errText == "") {
			t.Fatalf("validateRequest(%q) = %q, %q; want exactly one of value and error", body, value, errText)
		}
		if errText != "" {
			if !strings.HasPrefix(errText, "error in openapi3filter.RequestError: request body has an error: ") {
				t.Fatalf("error text %q lacks the validator prefix", errText)
			}
			return
		}
		if !uuidRE.MatchString(value) {
			t.Fatalf("accepted value %q does not match the pattern", value)
		}
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err == nil && len(obj) != 1 {
			t.Fatalf("accepted %q with %d properties", body, len(obj))
		}
	})
}

func TestValidateRequestAccepts(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"plain", `{"personalAccessToken":"0f0f0f0f-0000-4000-8000-000000000000"}`, "0f0f0f0f-0000-4000-8000-000000000000"},
		{"unanchored", `{"personalAccessToken":" 0f0f0f0f-0000-4000-8000-000000000000\n"}`, " 0f0f0f0f-0000-4000-8000-000000000000\n"},
		{"whitespace around", " {\"personalAccessToken\" : \"0f0f0f0f-0000-4000-8000-000000000000\"} \n", "0f0f0f0f-0000-4000-8000-000000000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errText := validateRequest("SignInPATRequest", "personalAccessToken", []byte(tc.body))
			if got != tc.want || errText != "" {
				t.Errorf("validateRequest(%q) = %q, %q; want %q", tc.body, got, errText, tc.want)
			}
		})
	}
}
