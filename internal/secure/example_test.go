package secure_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/secure"
)

// A server accepts one connection on its client-role listener; a client
// with the same key dials it, sends a request and closes its side.
func Example() {
	key := keys.MustGenerate() // in practice: SHARED_KEY from the config file
	cfg := secure.Config{Key: key, Role: secure.RoleClient}
	ctx := context.Background()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		// Server returns only once the client has proved the key.
		c, err := secure.Server(ctx, raw, cfg)
		if err != nil {
			fmt.Println("server:", err)
			return
		}
		defer c.Close()
		req, err := io.ReadAll(c) // up to the client's CloseWrite
		fmt.Printf("server got %q (%v)\n", req, err)
	}()

	c, err := secure.Dial(ctx, ln.Addr().String(), cfg)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("reconstruct this")); err != nil {
		panic(err)
	}
	if err := c.CloseWrite(); err != nil {
		panic(err)
	}
	<-done
	// Output: server got "reconstruct this" (<nil>)
}

// A client with the wrong key is refused without an answer, and learns only
// that authentication failed.
func ExampleDial_wrongKey() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = secure.Server(context.Background(), raw, secure.Config{Key: keys.MustGenerate(), Role: secure.RoleAdmin})
	}()
	_, err = secure.Dial(context.Background(), ln.Addr().String(), secure.Config{Key: keys.MustGenerate(), Role: secure.RoleAdmin})
	fmt.Println(errors.Is(err, secure.ErrAuth))
	// Output: true
}
