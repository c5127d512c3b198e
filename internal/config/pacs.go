package config

import (
	"net"
	"net/url"
	"time"
)

// PACS delivery modes (PACS_DELIVERY).
const (
	PACSOff       = "off"
	PACSAlways    = "always"
	PACSOnRequest = "on-request"
)

// PACS is the server's PACS delivery settings (docs/PACS.md). The password
// is not here: the server reads PACS_PASSWORD_FILE at each attempt.
type PACS struct {
	Delivery     string        // PACS_DELIVERY: PACSOff, PACSAlways or PACSOnRequest
	DICOMwebURL  string        // PACS_DICOMWEB_URL; "" when there is no STOW-RS destination
	Username     string        // PACS_USERNAME
	PasswordFile string        // PACS_PASSWORD_FILE (absolute), "" for none
	CAFile       string        // PACS_CA_FILE (absolute), "" for the system's roots
	DIMSEAddress string        // PACS_DIMSE_ADDRESS; "" when there is no C-STORE destination
	CalledAE     string        // PACS_CALLED_AE
	CallingAE    string        // PACS_CALLING_AE
	Retry        time.Duration // PACS_RETRY_HOURS
}

// Enabled reports whether results are delivered at all.
func (p PACS) Enabled() bool { return p.Delivery == PACSAlways || p.Delivery == PACSOnRequest }

func buildPACS(s *source) PACS {
	p := PACS{
		Delivery:     get[string](s, "PACS_DELIVERY"),
		DICOMwebURL:  get[string](s, "PACS_DICOMWEB_URL"),
		Username:     get[string](s, "PACS_USERNAME"),
		PasswordFile: get[string](s, "PACS_PASSWORD_FILE"),
		CAFile:       get[string](s, "PACS_CA_FILE"),
		DIMSEAddress: get[string](s, "PACS_DIMSE_ADDRESS"),
		CalledAE:     get[string](s, "PACS_CALLED_AE"),
		CallingAE:    get[string](s, "PACS_CALLING_AE"),
		Retry:        get[time.Duration](s, "PACS_RETRY_HOURS"),
	}
	switch p.Delivery {
	case PACSOff, PACSAlways, PACSOnRequest, "":
	default:
		s.fail(s.line("PACS_DELIVERY"), "PACS_DELIVERY must be off, always or on-request")
	}
	if p.DICOMwebURL != "" {
		u, err := url.Parse(p.DICOMwebURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			s.fail(s.line("PACS_DICOMWEB_URL"), "PACS_DICOMWEB_URL must be an http:// or https:// URL")
		case u.User != nil:
			// Not repeated: the value holds a secret.
			s.fail(s.line("PACS_DICOMWEB_URL"), "PACS_DICOMWEB_URL must not carry credentials: use PACS_USERNAME and PACS_PASSWORD_FILE")
		}
	}
	if p.DIMSEAddress != "" {
		if h, port, err := net.SplitHostPort(p.DIMSEAddress); err != nil || h == "" || port == "" {
			s.fail(s.line("PACS_DIMSE_ADDRESS"), "PACS_DIMSE_ADDRESS must be host:port")
		}
	}
	if p.Enabled() && p.DICOMwebURL == "" && p.DIMSEAddress == "" {
		s.fail(s.line("PACS_DELIVERY"), "PACS_DELIVERY is %s but neither PACS_DICOMWEB_URL nor PACS_DIMSE_ADDRESS is set", p.Delivery)
	}
	if p.PasswordFile != "" && p.Username == "" {
		s.fail(s.line("PACS_PASSWORD_FILE"), "PACS_PASSWORD_FILE is set but PACS_USERNAME is empty")
	}
	return p
}
