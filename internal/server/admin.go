package server

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/recon-mri/recon/internal/protocol"
	"github.com/recon-mri/recon/internal/secure"
)

// serveAdmin answers an administrator's requests in sequence.
func (s *Server) serveAdmin(ctx context.Context, c *secure.Conn, log *slog.Logger) {
	for {
		m, err := protocol.ReadMessage(c)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Warn("admin session ended", "err", err)
			}
			return
		}
		var reply any
		var typ protocol.Type
		switch m.Type {
		case protocol.TypeStatus:
			if err = m.Decode(m.Type, &protocol.Empty{}); err != nil {
				err = badRequest(err)
				break
			}
			typ = protocol.TypeStatusReply
			reply, err = s.status(ctx)
		default:
			err = protocol.Errorf(protocol.CodeBadRequest, "unknown admin request %q", truncateString(string(m.Type), 40))
		}
		if err != nil {
			var pe *protocol.Error
			if !errors.As(err, &pe) {
				log.Error("admin request failed", "request", string(m.Type), "err", err)
				pe = protocol.Errorf(protocol.CodeInternal, "internal server error; see the server log")
			}
			if protocol.WriteError(c, pe) != nil || pe.Code == protocol.CodeBadRequest {
				return
			}
			continue
		}
		log.Info("admin request", "request", string(m.Type))
		if protocol.WriteMessage(c, typ, reply) != nil {
			return
		}
	}
}
