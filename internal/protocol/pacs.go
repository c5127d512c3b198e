package protocol

// Delivery is where a finished job's results go besides its client
// (JobInfo.Delivery). It is separate from JobInfo.Delivered, which says
// only that the client downloaded and acknowledged the results.
type Delivery struct {
	PACS *PACSDelivery `json:"pacs,omitempty"`
}

// The states of a PACS delivery, of a destination and of an instance.
const (
	PACSPending   = "pending"
	PACSDelivered = "delivered"
	PACSFailed    = "failed"
)

// PACSDelivery is a job's delivery to the PACS (docs/PACS.md).
type PACSDelivery struct {
	// State is pending (being sent, or waiting to be retried), delivered
	// (every destination confirmed every instance) or failed.
	State string `json:"state"`
	// Instances is the number of DICOM results; Confirmed the number
	// every destination confirmed.
	Instances int    `json:"instances"`
	Confirmed int    `json:"confirmed"`
	Error     string `json:"error,omitempty"`
	// Destinations has one entry per route (dicomweb, dimse).
	Destinations []PACSDestination `json:"destinations"`
}

// PACSDestination is the delivery to one route of the PACS.
type PACSDestination struct {
	Route     string `json:"route"` // "dicomweb" (STOW-RS) or "dimse" (C-STORE)
	State     string `json:"state"`
	Instances int    `json:"instances"`
	Confirmed int    `json:"confirmed"`
	Failed    int    `json:"failed,omitempty"`
	Warnings  int    `json:"warnings,omitempty"` // stored with a warning status
	Error     string `json:"error,omitempty"`
}

// Admin request to retry a failed PACS delivery.
const (
	TypeAdminRedeliver      Type = "admin_redeliver" // JobRef → RedeliverReply
	TypeAdminRedeliverReply Type = "admin_redeliver_reply"
)

// RedeliverReply answers TypeAdminRedeliver.
type RedeliverReply struct {
	JobID string `json:"job_id"`
	// Pending is the number of instances to send again.
	Pending int `json:"pending"`
}
