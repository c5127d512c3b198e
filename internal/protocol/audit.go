package protocol

import "time"

// The admin request that reads or verifies the audit trail. A listing is
// answered with one or more TypeAdminAuditReply messages, the last with
// Done set; a verification with one, carrying Verify.
const (
	TypeAdminAudit      Type = "admin_audit" // AuditRequest → AuditReply...
	TypeAdminAuditReply Type = "admin_audit_reply"
)

// MaxAuditIdentity caps the identity name an audit request filters on.
const MaxAuditIdentity = 64

// AuditRequest selects audit records (zero fields select all), or asks
// the server to verify the whole chain.
type AuditRequest struct {
	Since    *time.Time `json:"since,omitempty"`
	Identity string     `json:"identity,omitempty"`
	JobID    string     `json:"job_id,omitempty"`
	Verify   bool       `json:"verify,omitempty"`
}

// AuditReply carries audit records, oldest first, each one line as
// stored, or the result of a verification.
type AuditReply struct {
	Records []string     `json:"records"`
	Verify  *AuditVerify `json:"verify,omitempty"`
	Done    bool         `json:"done"`
}

// AuditVerify is the result of checking the audit chain: OK, or the
// first bad line (File, Line, Reason).
type AuditVerify struct {
	OK       bool   `json:"ok"`
	Path     string `json:"path"` // the audit file
	Files    int    `json:"files"`
	Records  uint64 `json:"records"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`
	HeadSeq  uint64 `json:"head_seq"`
	Note     string `json:"note,omitempty"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	Reason   string `json:"reason,omitempty"`
}
