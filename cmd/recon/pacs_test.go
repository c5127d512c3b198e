package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recon-mri/recon/internal/jobs"
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
# Builtins only, but for dump2dcm: the machine may be busy.
base="2.25.$(date +%s%N)$$"
k=0
uid() { k=$((k + 1)); u="$base$k"; }
uid; study=${RECON_OPT_STUDY_INSTANCE_UID:-$u}
pid=${RECON_OPT_PATIENT_ID:-RECON-$RECON_JOB_ID}
uid; series=$u
uid; frame=$u
n=${RECON_OPT_SLICES:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((i = 1; i <= n; i++)); do
  uids="(0020,000d) UI [$study]
(0020,000e) UI [$series]"
  if [ "${RECON_OPT_BAD:-}" = 1 ] && [ "$i" = 2 ]; then uids=""; fi
  uid
  printf -v name 'slice-%04d.img' "$i"
  cat > "$tmp/d.txt" <<EOF
(0008,0005) CS [ISO_IR 192]
(0008,0008) CS [DERIVED\PRIMARY\OTHER]
(0008,0016) UI =MRImageStorage
(0008,0018) UI [$u]
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
  dump2dcm -q "$tmp/d.txt" "$out/$name"
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
	lines := append([]string{"PACS_DELIVERY = always", "PACS_PASSWORD_FILE = pacs.pw"}, extra...) // a later line of a key wins
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
	for _, msg := range []string{"PACS delivery queued", "PACS delivery done"} {
		recs := servertest.LogRecords(t, filepath.Join(dir, "recon.log"), msg)
		if len(recs) != 1 || recs[0]["job_id"] != id {
			t.Errorf("log records %q = %v, want one with job_id %s", msg, recs, id)
		}
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

// TestPACSDeliveryCStore: the same through DIMSE C-STORE (storescu) only.
func TestPACSDeliveryCStore(t *testing.T) {
	o := needOrthanc(t)
	dir := t.TempDir()
	pacsServer(t, dir, "unused", "PACS_USERNAME = nobody", "PACS_DIMSE_ADDRESS = 127.0.0.1:"+o.dicomPort, "PACS_CALLED_AE = "+o.aet)
	pid, study := "CSTORE-"+fmt.Sprint(time.Now().UnixNano()), freshUID()
	id := submitPACS(t, dir, "patient_id="+pid, "study_instance_uid="+study, "slices=3")
	waitState(t, dir, "client.opts", id, "succeeded")
	j := waitPACS(t, dir, id, "delivered", 60*time.Second)
	p := j.Delivery.PACS
	if p.Instances != 3 || p.Confirmed != 3 || len(p.Destinations) != 1 || p.Destinations[0].Route != "dimse" {
		t.Errorf("delivery = %+v, want 3 of 3 confirmed by the one dimse destination", *p)
	}
	if got := o.find(t, pid, study); len(got) != 3 {
		t.Errorf("Orthanc holds %d instances of patient %s, study %s; want 3", len(got), pid, study)
	}
}

// TestPACSRefusedInstance: Orthanc refuses one instance (no Study or
// Series UID) on both routes: each destination is tracked on its own, the
// others are confirmed, and the delivery fails with the PACS's reason.
// recon admin redeliver sends only the refused one again.
func TestPACSRefusedInstance(t *testing.T) {
	o := needOrthanc(t)
	dir := t.TempDir()
	srv := pacsServer(t, dir, o.password, "PACS_DICOMWEB_URL = "+o.dicomweb, "PACS_USERNAME = "+o.user,
		"PACS_DIMSE_ADDRESS = 127.0.0.1:"+o.dicomPort, "PACS_CALLED_AE = "+o.aet)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	pid, study := "BAD-"+fmt.Sprint(time.Now().UnixNano()), freshUID()
	id := submitPACS(t, dir, "patient_id="+pid, "study_instance_uid="+study, "slices=3", "bad=1")
	waitState(t, dir, "client.opts", id, "succeeded")
	j := waitPACS(t, dir, id, "failed", 60*time.Second)
	p := j.Delivery.PACS
	if p.Instances != 3 || p.Confirmed != 2 || len(p.Destinations) != 2 {
		t.Fatalf("delivery = %+v, want 2 of 3 confirmed, two destinations", *p)
	}
	for _, d := range p.Destinations {
		want := map[string]string{"dicomweb": "0xC000", "dimse": "0xA700"}[d.Route]
		if d.State != "failed" || d.Confirmed != 2 || d.Failed != 1 || !strings.Contains(d.Error, want) ||
			!strings.Contains(d.Error, "slice-0002.img") {
			t.Errorf("destination %+v: want failed, 2 confirmed, 1 failed, the error naming slice-0002.img and %s", d, want)
		}
	}
	if !strings.Contains(p.Error, "slice-0002.img") {
		t.Errorf("delivery error %q does not name the refused file", p.Error)
	}
	if recs := servertest.LogRecords(t, filepath.Join(dir, "recon.log"), "PACS refused an instance"); len(recs) != 2 ||
		recs[0]["job_id"] != id || recs[0]["file"] != "slice-0002.img" {
		t.Errorf("log records of the refusal = %v, want two (one per route) with the job id and file", recs)
	}
	if got := o.find(t, pid, study); len(got) != 2 {
		t.Errorf("Orthanc holds %d instances of the study; want the 2 good ones", len(got))
	}
	r := runRecon(t, dir, "status", "--opts", "client.opts", id)
	if !strings.Contains(r.stdout, "pacs       failed: 2 of 3 instance(s) confirmed") || !strings.Contains(r.stdout, "pacs error ") {
		t.Errorf("status text:\n%s", r.stdout)
	}

	r = admin(t, dir, "redeliver", id)
	if r.code != 0 || !strings.Contains(r.stdout, "2 instance(s) to send") {
		t.Fatalf("admin redeliver: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitPACS(t, dir, id, "failed", 60*time.Second)
	r = admin(t, dir, "redeliver", "aaaaaaaaaaaaaaaaaaaaaaaaaa")
	if r.code == 0 {
		t.Errorf("admin redeliver of an unknown job succeeded:\n%s", r.stdout)
	}
	srv.stop(t)
	for _, in := range pacsRecord(t, dir, id) {
		want := 1
		if in.File == "slice-0002.img" {
			want = 2 // refused, then sent again by redeliver
		}
		if in.Sends != want {
			t.Errorf("%s %s sent %d times, want %d", in.Dest, in.File, in.Sends, want)
		}
	}
}

// pacsRecord reads the job's PACS delivery record from the stopped
// server's store.
func pacsRecord(t *testing.T, dir, id string) []jobs.PACSInstance {
	t.Helper()
	s, err := jobs.Open(filepath.Join(dir, "data", "state", "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.GetPACSDelivery(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d.Instances
}

// freePort returns a loopback port nothing listens on (it may be taken
// before it is used; the tests' ports come from a large range).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestPACSDownThenUp: no PACS listens when the job ends; the delivery
// stays pending, listed by recon admin queue with its error, and the
// client's fetch leaves the results in place. Then an Orthanc of its own
// (scripts/orthanc-up.sh) starts on that port, and the delivery completes.
func TestPACSDownThenUp(t *testing.T) {
	needOrthanc(t)
	host, port, _ := net.SplitHostPort(freePort(t))
	dicomPort := strings.TrimPrefix(freePort(t), "127.0.0.1:")
	const password = "down-then-up-pw"
	dir := t.TempDir()
	srv := pacsServer(t, dir, password, "PACS_DICOMWEB_URL = http://"+host+":"+port+"/dicom-web", "PACS_USERNAME = recon")
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	pid, study := "DOWN-"+fmt.Sprint(time.Now().UnixNano()), freshUID()
	id := submitPACS(t, dir, "patient_id="+pid, "study_instance_uid="+study, "slices=2")
	waitState(t, dir, "client.opts", id, "succeeded")
	servertest.Eventually(t, 30*time.Second, "the unreachable PACS reported", func() bool {
		j, _ := pacsStatus(t, dir, id)
		return j.Delivery != nil && j.Delivery.PACS != nil && strings.Contains(j.Delivery.PACS.Error, "connection refused")
	})
	j, raw := pacsStatus(t, dir, id)
	if p := j.Delivery.PACS; p.State != "pending" || p.Confirmed != 0 || p.Instances != 2 {
		t.Fatalf("with the PACS down: %s", raw)
	}
	r := admin(t, dir, "queue")
	if !strings.Contains(r.stdout, "PACS deliveries pending:") || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "connection refused") {
		t.Errorf("admin queue does not list the pending delivery:\n%s", r.stdout)
	}
	// The client's download does not remove what the delivery still needs.
	r = runRecon(t, dir, "fetch", "--opts", "client.opts", "--output", filepath.Join(dir, "out"), id)
	if r.code != 0 {
		t.Fatalf("fetch: exit %d\n%s", r.code, r.stderr)
	}

	o := startOrthanc(t, port, dicomPort, password)
	waitPACS(t, dir, id, "delivered", 90*time.Second)
	if got := o.find(t, pid, study); len(got) != 2 {
		t.Errorf("Orthanc holds %d instances; want 2", len(got))
	}
	// Delivered to both: the results are gone now.
	servertest.Eventually(t, 10*time.Second, "results removed after both deliveries", func() bool {
		_, err := os.Stat(filepath.Join(dir, "data", "outputs", id))
		return os.IsNotExist(err)
	})
}

// startOrthanc starts an Orthanc of the test's own with
// scripts/orthanc-up.sh on the given ports, stopped when the test ends.
func startOrthanc(t *testing.T, httpPort, dicomPort, password string) orthanc {
	t.Helper()
	home := t.TempDir()
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "orthanc-up.sh"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(filepath.Join(filepath.Dir(script), "orthanc-down.sh"), home).CombinedOutput(); err != nil {
			t.Errorf("orthanc-down.sh: %v\n%s", err, out)
		}
	})
	cmd := exec.Command(script, home)
	cmd.Env = append(os.Environ(), "ORTHANC_HTTP_PORT="+httpPort, "ORTHANC_DICOM_PORT="+dicomPort,
		"ORTHANC_USER=recon", "ORTHANC_PASSWORD="+password)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("orthanc-up.sh: %v\n%s", err, out)
	}
	url := "http://127.0.0.1:" + httpPort
	return orthanc{url: url, dicomweb: url + "/dicom-web", user: "recon", password: password, dicomPort: dicomPort, aet: "ORTHANC"}
}

// TestPACSKilledMidDelivery: the server is SIGKILLed while the second
// STOW-RS request of a delivery is in flight (a proxy holds it); after the
// restart the delivery completes, and recon's record shows that no
// instance the PACS had confirmed before the crash was sent again.
func TestPACSKilledMidDelivery(t *testing.T) {
	o := needOrthanc(t)
	target, _ := url.Parse(o.url)
	held := make(chan struct{}, 1)
	release := make(chan struct{})
	var mu sync.Mutex
	requests := 0
	rp := httputil.NewSingleHostReverseProxy(target)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		n := requests
		mu.Unlock()
		if n == 2 {
			held <- struct{}{}
			<-release
			http.Error(w, "gone", http.StatusBadGateway)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer hs.Close()
	defer close(release)

	dir := t.TempDir()
	srv := pacsServer(t, dir, o.password, "PACS_DICOMWEB_URL = "+hs.URL+"/dicom-web", "PACS_USERNAME = "+o.user)
	pid, study := "KILL-"+fmt.Sprint(time.Now().UnixNano()), freshUID()
	const slices = 60 // two STOW-RS requests: 50, then 10
	id := submitPACS(t, dir, "patient_id="+pid, "study_instance_uid="+study, fmt.Sprint("slices=", slices))
	select {
	case <-held:
	case <-time.After(90 * time.Second):
		t.Fatal("the second STOW-RS request never came")
	}
	j, raw := pacsStatus(t, dir, id)
	if j.Delivery == nil || j.Delivery.PACS.Confirmed != 50 {
		t.Fatalf("before the kill: %s", raw)
	}
	srv.kill9(t)
	before := map[string]jobs.PACSInstance{}
	for _, in := range pacsRecord(t, dir, id) {
		before[in.File] = in
	}

	srv = startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, readKey(t, dir))
	waitPACS(t, dir, id, "delivered", 90*time.Second)
	if got := o.find(t, pid, study); len(got) != slices {
		t.Errorf("Orthanc holds %d instances; want %d", len(got), slices)
	}
	srv.stop(t)
	confirmed := 0
	for _, in := range pacsRecord(t, dir, id) {
		b := before[in.File]
		if in.State != jobs.DeliveryDelivered {
			t.Errorf("%s: %s after the restart", in.File, in.State)
		}
		if b.State == jobs.DeliveryDelivered {
			confirmed++
			if in.Sends != 1 || !in.LastSentAt.Equal(b.LastSentAt) {
				t.Errorf("%s was confirmed before the crash and sent again: %d sends", in.File, in.Sends)
			}
		} else if in.Sends != 2 {
			// In flight at the crash: sent once before, once after.
			t.Errorf("%s (unconfirmed at the crash) sent %d times, want 2", in.File, in.Sends)
		}
	}
	if confirmed != 50 {
		t.Errorf("%d instances confirmed before the crash, want 50", confirmed)
	}
}

// readKey is SHARED_KEY of dir/recon.opts.
func readKey(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "recon.opts"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == "SHARED_KEY" {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no SHARED_KEY")
	return ""
}

// TestPACSWrongPassword: a password file others can read is refused and a
// wrong password fails the delivery, each with a clear error; the password
// never shows in status, admin output or the log. A corrected file needs
// no restart: recon admin redeliver then delivers.
func TestPACSWrongPassword(t *testing.T) {
	o := needOrthanc(t)
	dir := t.TempDir()
	const wrong = "wrong-secret-4242"
	srv := pacsServer(t, dir, wrong, "PACS_DICOMWEB_URL = "+o.dicomweb, "PACS_USERNAME = "+o.user)
	adminOpts(t, dir, filepath.Join(dir, "admin.opts"), srv.adminAddr)
	pw := filepath.Join(dir, "pacs.pw")
	if err := os.Chmod(pw, 0o644); err != nil {
		t.Fatal(err)
	}
	id := submitPACS(t, dir, "slices=1")
	waitState(t, dir, "client.opts", id, "succeeded")
	servertest.Eventually(t, 30*time.Second, "the open password file refused", func() bool {
		j, _ := pacsStatus(t, dir, id)
		return j.Delivery != nil && strings.Contains(j.Delivery.PACS.Error, "chmod 600")
	})
	if err := os.Chmod(pw, 0o600); err != nil {
		t.Fatal(err)
	}
	j := waitPACS(t, dir, id, "failed", 60*time.Second)
	if e := j.Delivery.PACS.Error; !strings.Contains(e, "refused recon's credentials (HTTP 401") ||
		!strings.Contains(e, "PACS_PASSWORD_FILE") {
		t.Errorf("error = %q, want the credentials named", e)
	}
	writeFile(t, pw, o.password+"\n", 0o600)
	if r := admin(t, dir, "redeliver", id); r.code != 0 {
		t.Fatalf("redeliver: exit %d\n%s", r.code, r.stderr)
	}
	waitPACS(t, dir, id, "delivered", 60*time.Second)

	var seen []string
	for _, args := range [][]string{{"status"}, {"queue"}, {"--json", "status"}, {"--json", "queue"}} {
		r := admin(t, dir, args...)
		seen = append(seen, r.stdout+r.stderr)
	}
	if !strings.Contains(seen[2], `"PACS_PASSWORD_FILE"`) || !strings.Contains(seen[2], "pacs.pw") {
		t.Errorf("admin status does not name the password file:\n%s", seen[2])
	}
	st := runRecon(t, dir, "status", "--opts", "client.opts", "--json", id)
	seen = append(seen, st.stdout)
	logb, _ := os.ReadFile(filepath.Join(dir, "recon.log"))
	seen = append(seen, string(logb), srv.stderr.String())
	for i, s := range seen {
		for _, secret := range []string{wrong, o.password} {
			if strings.Contains(s, secret) {
				t.Errorf("output %d shows the PACS password", i)
			}
		}
	}
}

// TestPACSOnRequest: with PACS_DELIVERY = on-request only a job submitted
// with deliver=pacs is delivered; the other has no delivery at all.
func TestPACSOnRequest(t *testing.T) {
	o := needOrthanc(t)
	dir := t.TempDir()
	pacsServer(t, dir, o.password, "PACS_DELIVERY = on-request", "PACS_DICOMWEB_URL = "+o.dicomweb, "PACS_USERNAME = "+o.user)
	plain := submitPACS(t, dir, "slices=1")
	asked := submitPACS(t, dir, "slices=1", "deliver=pacs")
	waitState(t, dir, "client.opts", plain, "succeeded")
	waitState(t, dir, "client.opts", asked, "succeeded")
	waitPACS(t, dir, asked, "delivered", 60*time.Second)
	if j, raw := pacsStatus(t, dir, plain); j.Delivery != nil {
		t.Errorf("a job without deliver=pacs has a delivery:\n%s", raw)
	}
}

// TestPACSDeliveryFoundAtStart: a job that succeeded without a delivery
// record (as when the server stops between the job's end and recording
// its delivery; here delivery was off) gets one at the next start, within
// PACS_RETRY_HOURS, while its results are on the server.
func TestPACSDeliveryFoundAtStart(t *testing.T) {
	o := needOrthanc(t)
	dir := t.TempDir()
	srv := pacsServer(t, dir, o.password, "PACS_DELIVERY = off", "PACS_USERNAME = "+o.user)
	pid, study := "START-"+fmt.Sprint(time.Now().UnixNano()), freshUID()
	id := submitPACS(t, dir, "patient_id="+pid, "study_instance_uid="+study, "slices=2")
	waitState(t, dir, "client.opts", id, "succeeded")
	if j, raw := pacsStatus(t, dir, id); j.Delivery != nil {
		t.Fatalf("delivery off, yet: %s", raw)
	}
	srv.stop(t)
	key := readKey(t, dir)
	f, err := os.OpenFile(filepath.Join(dir, "recon.opts"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "PACS_DELIVERY = always\nPACS_DICOMWEB_URL = %s\n", o.dicomweb)
	f.Close()
	removeLine(t, filepath.Join(dir, "recon.opts"), "PACS_DELIVERY = off")
	srv = startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	waitPACS(t, dir, id, "delivered", 60*time.Second)
	if got := o.find(t, pid, study); len(got) != 2 {
		t.Errorf("Orthanc holds %d instances; want 2", len(got))
	}
}

func removeLine(t *testing.T, path, line string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != line {
			keep = append(keep, l)
		}
	}
	writeFile(t, path, strings.Join(keep, "\n"), 0o600)
}
