package tokencache_test

import (
	"context"
	"fmt"
	"time"

	"github.com/dxtra-ai/dxtra-proxy/dxtratest"
	"github.com/dxtra-ai/dxtra-proxy/tokencache"
)

// ExampleCache keeps a token fresh for a PAT against dxtratest, a loopback fake of the
// Dxtra auth service, and reads it the way the proxy does.
func ExampleCache() {
	srv := dxtratest.NewServer(dxtratest.Options{})
	defer srv.Close()
	pat := tokencache.NewSecret(srv.NewPAT()) // in production: DXTRA_PAT or DXTRA_PAT_FILE

	cache, err := tokencache.New(tokencache.Options{
		PAT:       func() (tokencache.Secret, error) { return pat, nil },
		Exchanger: tokencache.HTTPExchanger{BaseURL: srv.AuthBaseURL()},
		Role:      "user",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cache.Run(ctx) }() // the background loop
	defer func() { stop(); <-done }()

	// Token waits for the first exchange, bounded by its context.
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tok, err := cache.Token(wait)
	if err != nil {
		fmt.Println(err)
		return
	}
	ready, _ := cache.Ready()
	fmt.Println("token obtained:", !tok.Value.IsZero())
	fmt.Println("usable for now:", tok.Usable(time.Now()))
	fmt.Println("roles:", tok.Roles)
	fmt.Println("ready:", ready)
	fmt.Println("printed as a fingerprint:", fmt.Sprint(tok.Value) == tok.Value.Fingerprint())
	// Output:
	// token obtained: true
	// usable for now: true
	// roles: [me user]
	// ready: true
	// printed as a fingerprint: true
}
