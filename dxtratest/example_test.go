package dxtratest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
)

// Example starts the fake, mints a PAT and exchanges it for a session the way a client
// of Hasura Auth does.
func Example() {
	srv := dxtratest.NewServer(dxtratest.Options{})
	defer srv.Close()

	pat := srv.NewPAT()
	resp, err := http.Post(srv.AuthBaseURL()+"/signin/pat", "application/json",
		strings.NewReader(`{"personalAccessToken":"`+pat+`"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var body struct {
		Session struct {
			AccessToken          string `json:"accessToken"`
			AccessTokenExpiresIn int    `json:"accessTokenExpiresIn"`
			RefreshToken         string `json:"refreshToken"`
		} `json:"session"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, body.Session.AccessTokenExpiresIn, strings.Count(body.Session.AccessToken, "."))
	// Output: 200 900 2
}
