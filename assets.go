// Package recon holds files that ship inside the recon binary.
package recon

import _ "embed"

// DefaultScript is the default reconstruction script
// (default_recon_script.sh): a bash script that reconstructs BART k-space
// pairs (NAME.cfl/NAME.hdr) with BART's fft or pics into NAME_recon.cfl/.hdr,
// NAME.png and NAME.dcm, and lists any other inputs with their sizes and
// SHA-256 in manifest.txt. It follows the calling convention
// "SCRIPT INPUT_DIR --output-dir OUTPUT_DIR" with options in RECON_OPT_*
// variables. The server writes it, executable, next to a freshly generated
// config so that a new installation has a working RECON_SCRIPT_PATH.
//
//go:embed default_recon_script.sh
var DefaultScript []byte
