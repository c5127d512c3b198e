package config

// The advice for a key that a client-side file lacks: a key generated with
// recon keygen cannot work there, since it must be the one the server (or
// relay) already has.
var (
	clientKeyHelp = map[string]string{
		"SHARED_KEY": "it is the server's client key: copy SHARED_KEY from the server's recon.opts " +
			"(through a relay, SHARED_KEY_RELAY_TO_CLIENTS from its relay.opts); a newly generated key cannot work",
	}
	adminKeyHelp = map[string]string{
		"SERVER_ADMIN_SHARED_KEY": "it is the server's admin key: copy SERVER_ADMIN_SHARED_KEY from the server's recon.opts; " +
			"a newly generated key cannot work",
	}
	relayAdminKeyHelp = map[string]string{
		"RELAY_ADMIN_SHARED_KEY": "it is the relay's admin key: copy RELAY_ADMIN_SHARED_KEY from the relay's relay.opts; " +
			"a newly generated key cannot work",
	}
)

// missingKeyMsg is the error for a required key that is not set.
func (s *source) missingKeyMsg(name string) string {
	if h, ok := s.keyHelp[name]; ok {
		return name + " is required: " + h
	}
	return name + " is required: generate one with recon keygen"
}
