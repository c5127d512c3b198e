package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/recon-mri/recon/internal/dicom"
)

// newDicomCmd is `recon dicom`: the helper a reconstruction script calls to
// write its image as MR Image Storage files (package internal/dicom).
func newDicomCmd(e *env) *cobra.Command {
	var jobID, method, optionsJSON, uidRoot string
	cmd := &cobra.Command{
		Use:   "dicom [flags] IMAGE OUTPUT_PREFIX",
		Short: "Write a BART image as DICOM MR images (for reconstruction scripts)",
		Long: `Write the BART image IMAGE.cfl/IMAGE.hdr (a 2D image, or a 3D stack in
dimension 2) as DICOM MR Image Storage files: OUTPUT_PREFIX.dcm for one slice,
OUTPUT_PREFIX-0000.dcm, OUTPUT_PREFIX-0001.dcm... for a stack, one series with
new UIDs under --uid-root.

Run inside a reconstruction script, it takes the job's id, options and UID
root from the environment the server gives the script (RECON_JOB_ID,
RECON_OPTIONS_JSON, RECON_DICOM_UID_ROOT). The identity options (patient_id,
patient_name, patient_birth_date, patient_sex, study_instance_uid,
accession_number, study_id, study_date, study_time, referring_physician,
frame_of_reference_uid, series_number, series_description) and the geometry
options (fov_mm, slice_thickness_mm) are checked and written; a job without a
patient gets the placeholder PatientName RECON^PHANTOM and PatientID
RECON-<job id>. See docs/PACS.md.`,
		Args: argsRange(2, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := map[string]string{}
			if optionsJSON != "" {
				if err := json.Unmarshal([]byte(optionsJSON), &opts); err != nil {
					return &usageError{fmt.Errorf("--options-json: not a JSON object of strings: %v", err)}
				}
			}
			if jobID == "" {
				jobID = "unknown"
			}
			id, geo, err := dicom.FromOptions(opts, jobID)
			if err != nil {
				return err
			}
			img, err := dicom.ReadCFL(strings.TrimSuffix(strings.TrimSuffix(args[0], ".cfl"), ".hdr"))
			if err != nil {
				return err
			}
			paths, err := dicom.Write(args[1], img, dicom.Series{
				Identity: id, Geometry: geo, UIDRoot: uidRoot,
				JobID: jobID, Method: method, Software: versionString(),
			})
			if err != nil {
				return err
			}
			for _, p := range paths {
				fmt.Fprintln(e.stdout, p)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&jobID, "job-id", os.Getenv("RECON_JOB_ID"), "the job's `ID` (for PatientID's placeholder and the series' description)")
	cmd.Flags().StringVar(&method, "method", "", "the reconstruction `METHOD`, named in SeriesDescription")
	cmd.Flags().StringVar(&optionsJSON, "options-json", os.Getenv("RECON_OPTIONS_JSON"), "the job's options as a JSON object")
	root := os.Getenv("RECON_DICOM_UID_ROOT")
	if root == "" {
		root = dicom.UUIDRoot
	}
	cmd.Flags().StringVar(&uidRoot, "uid-root", root, "`ROOT` of the new UIDs (default RECON_DICOM_UID_ROOT, else 2.25, UUID-derived)")
	return cmd
}

// withDICOMRef adds to opts the identity options read from the DICOM file
// at path (`recon submit --dicom-ref`); an option already in opts wins.
// It says on standard error what it sends, without the values (patient
// data).
func withDICOMRef(e *env, opts map[string]string, path string) (map[string]string, error) {
	if path == "" {
		return opts, nil
	}
	ref, err := dicom.ReadRef(path)
	if err != nil {
		return nil, err
	}
	if opts == nil {
		opts = make(map[string]string, len(ref))
	}
	var sent []string
	for _, k := range dicom.IdentityOptions {
		v, ok := ref[k]
		if !ok {
			continue
		}
		if _, given := opts[k]; given {
			continue
		}
		opts[k] = v
		sent = append(sent, k)
	}
	fmt.Fprintf(e.stderr, "recon: identity from %s: %s\n", path, strings.Join(sent, ", "))
	return opts, nil
}
