package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	dcm "github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/recon-mri/recon/internal/servertest"
)

// dicomAttrs reads a DICOM file with the library and returns its string
// and integer attributes as strings (multiple values joined by \).
func dicomAttrs(t *testing.T, path string) map[tag.Tag]string {
	t.Helper()
	ds, err := dcm.ParseFile(path, nil, dcm.SkipPixelData())
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	m := map[tag.Tag]string{}
	for _, e := range ds.Elements {
		switch v := e.Value.GetValue().(type) {
		case []string:
			m[e.Tag] = strings.Join(v, `\`)
		case []int:
			var s []string
			for _, x := range v {
				s = append(s, strconv.Itoa(x))
			}
			m[e.Tag] = strings.Join(s, `\`)
		}
	}
	return m
}

// checkDciodvfy runs dciodvfy (Debian dicom3tools) on path and fails on
// any error it reports.
func checkDciodvfy(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("dciodvfy", path).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Error") {
			t.Errorf("dciodvfy %s: %s", filepath.Base(path), l)
		}
	}
	if err != nil || !strings.Contains(string(out), "MRImage") {
		t.Errorf("dciodvfy %s: %v\n%s", filepath.Base(path), err, out)
	}
}

// TestReferenceScriptDICOM reconstructs a 2D and a 3D BART phantom
// through a real server with the default script and checks its DICOM
// output: dciodvfy reports zero errors on every file; the 3D stack is one
// file per slice in one series and frame of reference, InstanceNumber
// from 1; UIDs are under the server's DICOM_UID_ROOT; the identity is the
// job's options, or the marked placeholder without them.
func TestReferenceScriptDICOM(t *testing.T) {
	if _, err := exec.LookPath("bart"); err != nil {
		servertest.SkipUnlessStrict(t, "bart is not installed (apt-get install bart; make deps)")
	}
	if _, err := exec.LookPath("dciodvfy"); err != nil {
		servertest.SkipUnlessStrict(t, "dciodvfy is not installed (apt-get install dicom3tools; make deps)")
	}
	repo, _ := filepath.Abs(filepath.Join("..", ".."))
	dir := t.TempDir()
	const root = "1.2.826.0.1.3680043.10.777"
	key := serverOpts(t, dir, filepath.Join(repo, "default_recon_script.sh"), "DICOM_UID_ROOT = "+root)
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)
	bart := func(args ...string) {
		t.Helper()
		cmd := exec.Command("bart", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("bart %v: %v\n%s", args, err, out)
		}
	}
	bart("phantom", "-k", "-s", "4", "-x", "64", "flat")
	bart("phantom", "-3", "-k", "-s", "2", "-x", "24", "vol")

	// 2D, no identity: placeholders.
	r := runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out2d", "flat.cfl", "flat.hdr")
	if r.code != 0 {
		t.Fatalf("submit flat: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	flat := filepath.Join(dir, "out2d", "flat.dcm")
	checkDciodvfy(t, flat)
	m := dicomAttrs(t, flat)
	if m[tag.PatientName] != "RECON^PHANTOM" || !strings.HasPrefix(m[tag.PatientID], "RECON-") || m[tag.InstanceNumber] != "1" ||
		m[tag.SOPClassUID] != "1.2.840.10008.5.1.4.1.1.4" || m[tag.Modality] != "MR" || m[tag.SeriesDescription] != "recon fft" {
		t.Errorf("flat.dcm: patient %q id %q, instance %q, class %q, modality %q, description %q",
			m[tag.PatientName], m[tag.PatientID], m[tag.InstanceNumber], m[tag.SOPClassUID], m[tag.Modality], m[tag.SeriesDescription])
	}
	if _, err := os.Stat(filepath.Join(dir, "out2d", "flat.png")); err != nil {
		t.Errorf("the PNG is gone: %v", err)
	}

	// 3D with the identity as options.
	r = runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out3d",
		"--option", "patient_id=MRN0042", "--option", "patient_name=Doe^Jane",
		"--option", "study_instance_uid=1.2.3.4.5.6", "--option", "frame_of_reference_uid=1.2.3.4.5.7",
		"--option", "fov_mm=240", "--option", "slice_thickness_mm=3", "--option", "series_number=12",
		"vol.cfl", "vol.hdr")
	if r.code != 0 {
		t.Fatalf("submit vol: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "out3d", "vol-*.dcm"))
	sort.Strings(files)
	if len(files) != 24 {
		t.Fatalf("%d slices written, want 24: %v", len(files), files)
	}
	var series string
	sops := map[string]bool{}
	for k, f := range files {
		checkDciodvfy(t, f)
		m := dicomAttrs(t, f)
		if k == 0 {
			series = m[tag.SeriesInstanceUID]
		}
		for tg, want := range map[tag.Tag]string{
			tag.PatientID: "MRN0042", tag.PatientName: "Doe^Jane", tag.StudyInstanceUID: "1.2.3.4.5.6",
			tag.FrameOfReferenceUID: "1.2.3.4.5.7", tag.SeriesInstanceUID: series, tag.SeriesNumber: "12",
			tag.InstanceNumber: strconv.Itoa(k + 1), tag.PixelSpacing: `10\10`, tag.SliceThickness: "3",
			tag.SliceLocation: strconv.FormatFloat(float64(k)*3-34.5, 'f', -1, 64), tag.MRAcquisitionType: "3D",
		} {
			if m[tg] != want {
				t.Errorf("%s: %v = %q, want %q", filepath.Base(f), tg, m[tg], want)
			}
		}
		sop := m[tag.SOPInstanceUID]
		if !strings.HasPrefix(sop, root+".") || !strings.HasPrefix(series, root+".") || sops[sop] {
			t.Errorf("%s: SOP Instance UID %q, series %q: want new UIDs under DICOM_UID_ROOT %s", filepath.Base(f), sop, series, root)
		}
		sops[sop] = true
	}
}

// TestDicomCommandRefusesBadIdentity: recon dicom checks the identity
// options before it writes anything, and names the option at fault.
func TestDicomCommandRefusesBadIdentity(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "img.hdr"), "# Dimensions\n2 2 1\n", 0o600)
	writeFile(t, filepath.Join(dir, "img.cfl"), strings.Repeat("\x00", 32), 0o600)
	r := runRecon(t, dir, "dicom", "--options-json", `{"patient_birth_date":"1970-01-01"}`, "img", "out")
	if r.code == 0 || !strings.Contains(r.stderr, "option patient_birth_date") {
		t.Errorf("exit %d, stderr %q; want a refusal naming patient_birth_date", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out.dcm")); err == nil {
		t.Error("out.dcm written despite the bad option")
	}
	r = runRecon(t, dir, "dicom", "--uid-root", "1.02", "img", "out")
	if r.code == 0 || !strings.Contains(r.stderr, "not a UID root") {
		t.Errorf("bad root: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runRecon(t, dir, "dicom", "--options-json", `{"patient_id":"P1"}`, "img", "out")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "out.dcm" {
		t.Errorf("good call: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestSubmitDICOMRef: recon submit --dicom-ref reads the identity of a
// DICOM image of the same exam on the client and sends it as the job's
// options, which the script gets (an --option of the same key wins); a
// file that is not DICOM stops the submission before anything is sent.
func TestSubmitDICOMRef(t *testing.T) {
	dir := t.TempDir()
	script := servertest.WriteScript(t, dir, "s.sh", `#!/bin/sh
printf '%s' "$RECON_OPTIONS_JSON" > "$3/options.json"
`)
	key := serverOpts(t, dir, script)
	srv := startServer(t, dir, "recon.opts")
	clientOpts(t, filepath.Join(dir, "client.opts"), srv.clientAddr, key)

	// The reference: an image written by recon dicom with a known identity.
	writeFile(t, filepath.Join(dir, "img.hdr"), "# Dimensions\n2 2 1\n", 0o600)
	writeFile(t, filepath.Join(dir, "img.cfl"), strings.Repeat("\x00", 32), 0o600)
	r := runRecon(t, dir, "dicom", "--options-json", `{"patient_id":"MRN-REF-1","patient_name":"Ref^Patient","patient_birth_date":"19800229",`+
		`"study_instance_uid":"1.2.840.99.1","frame_of_reference_uid":"1.2.840.99.2","accession_number":"ACC-1","study_date":"20261130","study_time":"0815"}`, "img", "ref")
	if r.code != 0 {
		t.Fatalf("recon dicom: exit %d\n%s", r.code, r.stderr)
	}
	writeFile(t, filepath.Join(dir, "scan.7"), "raw", 0o644)
	r = runRecon(t, dir, "submit", "--opts", "client.opts", "--output", "out", "--dicom-ref", "ref.dcm",
		"--option", "patient_name=Given^Name", "--option", "method=fft", "scan.7")
	if r.code != 0 {
		t.Fatalf("submit --dicom-ref: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "identity from ref.dcm: patient_id, patient_birth_date, study_instance_uid") || strings.Contains(r.stderr, "MRN-REF-1") {
		t.Errorf("submit does not say which options it took from the reference, or shows a value:\n%s", r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "out", "options.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("options.json: %v: %s", err, b)
	}
	want := map[string]string{"patient_id": "MRN-REF-1", "patient_name": "Given^Name", "patient_birth_date": "19800229",
		"study_instance_uid": "1.2.840.99.1", "frame_of_reference_uid": "1.2.840.99.2", "accession_number": "ACC-1",
		"study_date": "20261130", "study_time": "0815", "method": "fft"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the script's options (-want +got):\n%s", diff)
	}

	r = runRecon(t, dir, "submit", "--opts", "client.opts", "--dicom-ref", "scan.7", "scan.7")
	if r.code == 0 || !strings.Contains(r.stderr, "not a DICOM file") {
		t.Errorf("--dicom-ref of a raw file: exit %d, stderr %q", r.code, r.stderr)
	}
}
