package e2etest

import (
	"net"
	"testing"
)

func TestAccepted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The handshake is done, but nobody called Accept: the connection waits in
	// the kernel's accept queue.
	if Accepted(t, conn) {
		t.Fatalf("Accepted() = true before Accept")
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if !Accepted(t, conn) {
		t.Fatalf("Accepted() = false after Accept")
	}
}
