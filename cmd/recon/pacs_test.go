package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/servertest"
)

// The PACS tests run against the Orthanc that scripts/orthanc-up.sh starts
// (make test does, around the Go tests); its environment names it.
type orthanc struct {
	url, dicomweb, user, password, dicomPort, aet string
}

func needOrthanc(t *testing.T) orthanc {
	t.Helper()
	o := orthanc{
		url: os.Getenv("ORTHANC_URL"), dicomweb: os.Getenv("ORTHANC_DICOMWEB_URL"),
		user: os.Getenv("ORTHANC_USER"), password: os.Getenv("ORTHANC_PASSWORD"),
		dicomPort: os.Getenv("ORTHANC_DICOM_PORT"), aet: os.Getenv("ORTHANC_AET"),
	}
	if o.url == "" || o.dicomweb == "" || o.dicomPort == "" {
		servertest.SkipUnlessStrict(t, "no Orthanc: run scripts/orthanc-up.sh DIR and source DIR/env (make test does)")
	}
	if _, err := exec.LookPath("dump2dcm"); err != nil {
		servertest.SkipUnlessStrict(t, "dump2dcm (Debian package dcmtk) is not installed")
	}
	return o
}

// find asks Orthanc's REST API for the instances with this PatientID and
// StudyInstanceUID and returns their SOP Instance UIDs.
func (o orthanc) find(t *testing.T, patientID, studyUID string) []string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"Level": "Instance", "Expand": true,
		"Query": map[string]string{"PatientID": patientID, "StudyInstanceUID": studyUID},
	})
	req, _ := http.NewRequest(http.MethodPost, o.url+"/tools/find", bytes.NewReader(body))
	req.SetBasicAuth(o.user, o.password)
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("orthanc find: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("orthanc find: HTTP %d: %s", resp.StatusCode, b)
	}
	var found []struct {
		MainDicomTags map[string]string
	}
	if err := json.Unmarshal(b, &found); err != nil {
		t.Fatalf("orthanc find: %v: %s", err, b)
	}
	var uids []string
	for _, f := range found {
		uids = append(uids, f.MainDicomTags["SOPInstanceUID"])
	}
	return uids
}

// pacsScript writes a reconstruction script that leaves RECON_OPT_SLICES
// (default 3) MR Image Storage files, made with dcmtk's dump2dcm, with the
// PatientID and StudyInstanceUID of the job options patient_id and
// study_instance_uid, plus a text file that is not DICOM. With option
// bad=1 the second slice lacks its Study and Series UIDs: a PACS refuses
// it. It stands in for the reference script's DICOM writer.
func pacsScript(t *testing.T, dir string) string {
	return servertest.WriteScript(t, dir, "dicom.sh", `#!/bin/bash
set -euo pipefail
out=$3
uid() { printf '2.25.%s%s' "$(od -An -N7 -tu8 /dev/urandom | tr -d ' ')" "$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')"; }
study=${RECON_OPT_STUDY_INSTANCE_UID:-$(uid)}
pid=${RECON_OPT_PATIENT_ID:-RECON-$RECON_JOB_ID}
series=$(uid)
frame=$(uid)
n=${RECON_OPT_SLICES:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 "$n"); do
  uids="(0020,000d) UI [$study]
(0020,000e) UI [$series]"
  if [ "${RECON_OPT_BAD:-}" = 1 ] && [ "$i" = 2 ]; then uids=""; fi
  cat > "$tmp/d.txt" <<EOF
(0008,0005) CS [ISO_IR 192]
(0008,0008) CS [DERIVED\PRIMARY\OTHER]
(0008,0016) UI =MRImageStorage
(0008,0018) UI [$(uid)]
(0008,0020) DA [20260101]
(0008,0030) TM [120000]
(0008,0050) SH []
(0008,0060) CS [MR]
(0008,0070) LO []
(0008,0090) PN []
(0010,0010) PN [RECON^TEST]
(0010,0020) LO [$pid]
(0010,0030) DA []
(0010,0040) CS []
(0018,0020) CS [RM]
(0018,0021) CS [NONE]
(0018,0022) CS []
(0018,0023) CS [2D]
(0018,0050) DS [1]
(0018,0080) DS []
(0018,0081) DS []
(0018,0091) IS [1]
(0018,5100) CS [HFS]
$uids
(0020,0010) SH [1]
(0020,0011) IS [1]
(0020,0013) IS [$i]
(0020,0032) DS [0\0\\$i]
(0020,0037) DS [1\0\0\0\1\0]
(0020,0052) UI [$frame]
(0020,1040) LO []
(0020,1041) DS [$i]
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 4
(0028,0011) US 4
(0028,0030) DS [1\1]
(0028,0100) US 16
(0028,0101) US 16
(0028,0102) US 15
(0028,0103) US 0
(7fe0,0010) OW 0001\0002\0003\0004\0005\0006\0007\0008\0009\000a\000b\000c\000d\000e\000f\0010
EOF
  dump2dcm -q "$tmp/d.txt" "$out/slice-$(printf %04d "$i").img"
done
echo "not DICOM" > "$out/notes.txt"
`)
}

// pacsJob is the part of recon status --json a PACS test reads.
type pacsJob struct {
	State     string `json:"state"`
	Delivered bool   `json:"delivered"`
	Delivery  *struct {
		PACS *struct {
			State        string `json:"state"`
			Instances    int    `json:"instances"`
			Confirmed    int    `json:"confirmed"`
			Error        string `json:"error"`
			Destinations []struct {
				Route     string `json:"route"`
				State     string `json:"state"`
				Instances int    `json:"instances"`
				Confirmed int    `json:"confirmed"`
				Failed    int    `json:"failed"`
				Error     string `json:"error"`
			} `json:"destinations"`
		} `json:"pacs"`
	} `json:"delivery"`
}

func pacsStatus(t *testing.T, dir, id string) (pacsJob, string) {
	t.Helper()
	r := runRecon(t, dir, "status", "--opts", "client.opts", "--json", id)
	var j pacsJob
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatalf("status --json %s: exit %d, %v\n%s%s", id, r.code, err, r.stdout, r.stderr)
	}
	return j, r.stdout
}

// waitPACS waits until the job's PACS delivery is in state want.
func waitPACS(t *testing.T, dir, id, want string, d time.Duration) pacsJob {
	t.Helper()
	var j pacsJob
	var raw string
	deadline := time.Now().Add(d)
	for {
		j, raw = pacsStatus(t, dir, id)
		if j.Delivery != nil && j.Delivery.PACS != nil && j.Delivery.PACS.State == want {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: PACS delivery not %s within %s:\n%s", id, want, d, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pacsServer writes the server config (the script above, delivery on with
// the extra PACS keys) and a 0600 password file, starts the server and
// writes client.opts.
func pacsServer(t *testing.T, dir, password string, extra ...string) *serverProc {
	t.Helper()
	writeFile(t, filepath.Join(dir, "pacs.pw"), password+"\n", 0o600)
	script := pacsScript(t, dir)
	lines := append([]string{"PACS_DELIVERY = always", "PACS_PASSWORD_FILE = pacs.pw"}, extra...)
	key := serverOpts(t, dir, script, lines...)
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	return srv
}

func submitPACS(t *testing.T, dir string, opts ...string) string {
	t.Helper()
	in := filepath.Join(dir, "raw.dat")
	writeFile(t, in, "k-space", 0o644)
	args := []string{"submit", "--opts", "client.opts", "--no-wait"}
	for _, o := range opts {
		args = append(args, "--option", o)
	}
	r := runRecon(t, dir, append(args, in)...)
	if r.code != 0 {
		t.Fatalf("submit: exit %d\n%s", r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func freshUID() string { return fmt.Sprintf("2.25.%d%d", time.Now().UnixNano(), os.Getpid()) }

// TestPACSDeliverySTOW: a job's DICOM results reach Orthanc by STOW-RS,
// filed under the PatientID and StudyInstanceUID given as job options;
// the text result is not sent; status says delivered, in JSON and words,
// apart from the client's own download.
func TestPACSDeliverySTOW(t *testing.T) {
	o := needOrthanc(t)
	dir := t.TempDir()
	pacsServer(t, dir, o.password, "PACS_DICOMWEB_URL = "+o.dicomweb, "PACS_USERNAME = "+o.user)
	pid, study := "STOW-"+fmt.Sprint(time.Now().UnixNano()), freshUID()
	id := submitPACS(t, dir, "patient_id="+pid, "study_instance_uid="+study, "slices=4")
	waitState(t, dir, "client.opts", id, "succeeded")
	j := waitPACS(t, dir, id, "delivered", 60*time.Second)
	p := j.Delivery.PACS
	if p.Instances != 4 || p.Confirmed != 4 || len(p.Destinations) != 1 || p.Destinations[0].Route != "dicomweb" ||
		p.Destinations[0].Confirmed != 4 {
		t.Errorf("delivery = %+v, want 4 of 4 instances confirmed by the one dicomweb destination", *p)
	}
	if j.Delivered {
		t.Errorf("delivered (the client's download) is true before any fetch")
	}
	if got := o.find(t, pid, study); len(got) != 4 {
		t.Errorf("Orthanc holds %d instances of patient %s, study %s; want 4", len(got), pid, study)
	}
	r := runRecon(t, dir, "status", "--opts", "client.opts", id)
	if !strings.Contains(r.stdout, "pacs       delivered: the PACS confirmed all 4 instance(s)") {
		t.Errorf("status text does not say the delivery in words:\n%s", r.stdout)
	}
	// The client still gets every result, after the delivery.
	r = runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", filepath.Join(dir, "out"), id)
	if r.code != 0 {
		t.Fatalf("fetch after delivery: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "notes.txt")); err != nil {
		t.Errorf("fetch: %v", err)
	}
}
