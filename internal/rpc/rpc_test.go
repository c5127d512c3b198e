package rpc_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/keys"
	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/rpc"
	"github.com/recon-mri/recon/internal/secure"
)

// serve answers sessions on a loopback listener with m until the test
// ends, and returns a function that opens a client session.
func serve(t *testing.T, m *rpc.Mux[struct{}]) func() *rpc.Client {
	t.Helper()
	key, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				c, err := secure.Server(ctx, nc, secure.Config{Key: key, Role: secure.RoleAdmin, HandshakeTimeout: 10 * time.Second})
				if err != nil {
					return
				}
				m.Serve(ctx, c, slog.New(slog.DiscardHandler), struct{}{})
			}()
		}
	}()
	return func() *rpc.Client {
		t.Helper()
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		c, err := rpc.Dial(dctx, ln.Addr().String(), secure.Config{Key: key, Role: secure.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
}

func newMux() *rpc.Mux[struct{}] {
	m := &rpc.Mux[struct{}]{Name: "server", Unknown: "request",
		Budget: protocol.NewBudget(protocol.MessageBudget, time.Minute), IdleTimeout: time.Minute}
	type session = rpc.Session[struct{}]
	rpc.Reply(m, protocol.TypeJobStatus, protocol.TypeJob, func(_ context.Context, _ *session, ref *protocol.JobRef) (*protocol.JobInfo, error) {
		switch ref.JobID {
		case "secret":
			return nil, rpc.Internal(errors.New("disk /very/secret/path failed"))
		case "missing":
			return nil, protocol.Errorf(protocol.CodeNotFound, "no job %q", ref.JobID)
		}
		return &protocol.JobInfo{JobID: ref.JobID}, nil
	})
	rpc.Handle(m, protocol.TypeAdminLogs, func(_ context.Context, s *session, req *protocol.LogsRequest) error {
		for i := range req.Lines {
			s.ArmWrite()
			err := protocol.WriteMessage(s.Conn, protocol.TypeAdminLogsReply, protocol.LogsReply{Records: []string{"{}"}, Done: i == req.Lines-1})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return m
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestMuxErrors checks what a peer sees of a handler's errors: a wire
// error as it is (the session goes on), an internal one without detail
// (the session ends), and an unknown request as a bad request.
func TestMuxErrors(t *testing.T) {
	dial := serve(t, newMux())
	ctx := ctxT(t)

	c := dial()
	var j protocol.JobInfo
	if err := c.Call(ctx, protocol.TypeJobStatus, protocol.JobRef{JobID: "missing"}, protocol.TypeJob, &j); !protocol.IsCode(err, protocol.CodeNotFound) {
		t.Fatalf("missing job: %v", err)
	}
	if err := c.Call(ctx, protocol.TypeJobStatus, protocol.JobRef{JobID: "j1"}, protocol.TypeJob, &j); err != nil || j.JobID != "j1" {
		t.Fatalf("after a wire error the session goes on: %+v, %v", j, err)
	}
	err := c.Call(ctx, protocol.TypeJobStatus, protocol.JobRef{JobID: "secret"}, protocol.TypeJob, &j)
	if !protocol.IsCode(err, protocol.CodeInternal) || strings.Contains(err.Error(), "secret") ||
		!strings.Contains(err.Error(), "internal server error; see the server log") {
		t.Fatalf("internal error: %v", err)
	}
	if err := c.Call(ctx, protocol.TypeJobStatus, protocol.JobRef{JobID: "j1"}, protocol.TypeJob, &j); err == nil {
		t.Fatal("the session went on after an internal error")
	}

	c = dial()
	err = c.Call(ctx, protocol.TypeQueue, protocol.Empty{}, protocol.TypeQueueReply, &protocol.QueueReply{})
	if !protocol.IsCode(err, protocol.CodeBadRequest) || !strings.Contains(err.Error(), `unknown request "queue`) {
		t.Fatalf("unknown request: %v", err)
	}
	if err := c.Call(ctx, protocol.TypeJobStatus, protocol.JobRef{JobID: "j1"}, protocol.TypeJob, &j); err == nil {
		t.Fatal("the session went on after a bad request")
	}
}

// TestClientStream reads a reply of several messages.
func TestClientStream(t *testing.T) {
	c := serve(t, newMux())()
	var r protocol.LogsReply
	n := 0
	err := c.Stream(ctxT(t), protocol.TypeAdminLogs, protocol.LogsRequest{Lines: 3}, protocol.TypeAdminLogsReply, &r, func() bool {
		n += len(r.Records)
		return !r.Done
	})
	if err != nil || n != 3 {
		t.Fatalf("stream: %d records, %v", n, err)
	}
	var j protocol.JobInfo
	if err := c.Call(ctxT(t), protocol.TypeJobStatus, protocol.JobRef{JobID: "j2"}, protocol.TypeJob, &j); err != nil || j.JobID != "j2" {
		t.Fatalf("after a stream: %+v, %v", j, err)
	}
}
