//go:build unix

package watch

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/recon-mri/recon/internal/dicom"
	"github.com/recon-mri/recon/internal/servertest"
)

// optionsScript records the job's options and input names.
const optionsScript = `#!/bin/sh
set -eu
printf '%s' "$RECON_OPTIONS_JSON" > "$3/options.json"
ls "$1" > "$3/inputs.txt"
`

// writeRef writes a DICOM image with the identity opts at path, as recon
// dicom does.
func writeRef(t *testing.T, path string, opts map[string]string) {
	t.Helper()
	base := filepath.Join(t.TempDir(), "img")
	hdr := []byte("# Dimensions\n2 2 1\n")
	if err := os.WriteFile(base+".hdr", hdr, 0o600); err != nil {
		t.Fatal(err)
	}
	cfl := make([]byte, 32)
	binary.LittleEndian.PutUint32(cfl, math.Float32bits(1))
	if err := os.WriteFile(base+".cfl", cfl, 0o600); err != nil {
		t.Fatal(err)
	}
	img, err := dicom.ReadCFL(base)
	if err != nil {
		t.Fatal(err)
	}
	id, geo, err := dicom.FromOptions(opts, "ref")
	if err != nil {
		t.Fatal(err)
	}
	paths, err := dicom.Write(base, img, dicom.Series{Identity: id, Geometry: geo})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, data)
}

// TestDICOMRef: with CLIENT_WATCH_DICOM_REF, a DICOM file that arrives
// with the raw data is the group's reference: its identity reaches the
// script as options (a configured option of the same key wins), it is not
// uploaded, and the log names the options but never their values. A group
// of DICOM files only is not submitted.
func TestDICOMRef(t *testing.T) {
	e := newEnv(t)
	e.startServer(servertest.Options{Script: optionsScript})
	e.mod = func(c *Config) {
		c.DICOMRef = true
		c.Options = map[string]string{"method": "fft", "patient_name": "Configured^Name"}
	}
	d := e.start(hooks{})
	ident := map[string]string{"patient_id": "MRN-W-1", "patient_name": "Ref^Name", "study_instance_uid": "1.2.840.77.1",
		"frame_of_reference_uid": "1.2.840.77.2", "accession_number": "ACC-W", "study_date": "20261130", "study_time": "0930"}
	writeRef(t, filepath.Join(e.dir, "exam.dcm"), ident)
	writeFile(t, filepath.Join(e.dir, "P00001.7"), content("P00001.7", 500))
	gs := e.groupsWhen(d, "group with a reference done", allFinished(1))
	g := gs[0]
	if g.Status != StatusDone {
		t.Fatalf("group %s: %s", g.Status, g.Error)
	}
	names := fileNames(g)
	slices.Sort(names)
	if diff := cmp.Diff([]string{"P00001.7", "exam.dcm"}, names); diff != "" {
		t.Errorf("group files (-want +got):\n%s", diff)
	}
	dir := filepath.Join(e.downDir, g.Name)
	inputs, err := os.ReadFile(filepath.Join(dir, "inputs.txt"))
	if err != nil || strings.TrimSpace(string(inputs)) != "P00001.7" {
		t.Errorf("the job's inputs: %q (%v), want the raw file only", inputs, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "options.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"method": "fft", "patient_name": "Configured^Name", "patient_id": "MRN-W-1",
		"study_instance_uid": "1.2.840.77.1", "frame_of_reference_uid": "1.2.840.77.2", "accession_number": "ACC-W",
		"study_date": "20261130", "study_time": "0930"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the script's options (-want +got):\n%s", diff)
	}
	if recs := e.logRecords("group's DICOM reference read"); len(recs) != 1 || !strings.Contains(fmt.Sprint(recs[0]["options"]), "patient_id") {
		t.Errorf("log records of the reference: %v", recs)
	}

	// A DICOM file alone is no job.
	writeRef(t, filepath.Join(e.dir, "lonely.dcm"), ident)
	gs = e.groupsWhen(d, "DICOM-only group ended", allFinished(2))
	if gs[1].Status != StatusFailed || !strings.Contains(gs[1].Error, "only DICOM files") {
		t.Errorf("DICOM-only group: %s %q", gs[1].Status, gs[1].Error)
	}
	d.stop(t)
	for _, v := range []string{"MRN-W-1", "Ref^Name", "ACC-W", "1.2.840.77.1"} {
		if strings.Contains(e.logs.String(), v) {
			t.Errorf("the daemon's log shows %q", v)
		}
	}
}
