package watch

import (
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/recon-mri/recon/internal/dicom"
)

// withDICOMRef prepares a group's submission when the daemon takes DICOM
// references (Config.DICOMRef): the group's DICOM files (DICM at byte 128)
// are not uploaded, and the identity of the first of them by path is
// added to the job's options (an option of the configuration with the
// same key wins), as `recon submit --dicom-ref` does. A group without a
// DICOM file is sent as it is (the images get placeholders); one with
// nothing but DICOM files, or whose reference cannot be read, is not sent
// (the error says why, without patient data). Without Config.DICOMRef
// the files and options are returned unchanged.
func (w *Watcher) withDICOMRef(files []File, log *slog.Logger) ([]File, map[string]string, error) {
	if !w.cfg.DICOMRef {
		return files, w.cfg.Options, nil
	}
	var upload, refs []File
	for _, f := range files {
		if dicom.IsDICOM(f.Path) {
			refs = append(refs, f)
		} else {
			upload = append(upload, f)
		}
	}
	if len(refs) == 0 {
		log.Info("group has no DICOM reference; the images get placeholder identities")
		return files, w.cfg.Options, nil
	}
	if len(upload) == 0 {
		return nil, nil, errors.New("the group holds only DICOM files: no raw data to reconstruct")
	}
	slices.SortFunc(refs, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	id, err := dicom.ReadRef(refs[0].Path)
	if err != nil {
		return nil, nil, err
	}
	opts := maps.Clone(w.cfg.Options)
	if opts == nil {
		opts = make(map[string]string, len(id))
	}
	var sent []string
	for _, k := range dicom.IdentityOptions {
		if v, ok := id[k]; ok {
			if _, given := opts[k]; !given {
				opts[k] = v
				sent = append(sent, k)
			}
		}
	}
	// The names of the options only: their values are patient data.
	log.Info("group's DICOM reference read", "file", refs[0].Path, "options", sent, "dicom_files_not_sent", len(refs))
	return upload, opts, nil
}
