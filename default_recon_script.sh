#!/usr/bin/env bash
# recon default reconstruction script.
#
# Usage: default_recon_script.sh INPUT_DIR --output-dir OUTPUT_DIR
#        (--output-dir=OUTPUT_DIR works too)
#
# recon runs this script (or the one RECON_SCRIPT_PATH names) once per job,
# with the job's files in INPUT_DIR and an empty OUTPUT_DIR. Every regular
# file the script leaves in OUTPUT_DIR (subfolders included) is returned to
# the client. The script must not change INPUT_DIR.
#
# Job options arrive as environment variables, never as arguments:
#   RECON_JOB_ID          the job's id
#   RECON_OPTIONS_JSON    all options as one JSON object
#   RECON_OPT_<KEY>       one variable per option, KEY upper-cased
# and from the server:
#   RECON_BIN             the recon binary the server runs as (for recon dicom;
#                         without it, recon is looked for on PATH)
#   RECON_DICOM_UID_ROOT  the root of new DICOM UIDs (DICOM_UID_ROOT)
#
# What this script does:
#   * For every BART k-space pair NAME.cfl + NAME.hdr (coils in dimension 3):
#       method=fft (default): centred inverse FFT over the image dimensions
#           (bart fft -u -i 3, or 7 for 3D k-space), then a root-sum-of-squares
#           coil combination (bart rss 8) when there is more than one coil;
#       method=pics: ESPIRiT coil maps (bart ecalib -m1), then a parallel
#           imaging / compressed sensing reconstruction with a small
#           l1-wavelet regularisation (bart pics -l1 -r0.01);
#     and writes NAME_recon.cfl/.hdr (the image), NAME.png (bart toimg) and
#     NAME.dcm, a DICOM MR image a PACS accepts (recon dicom: new UIDs under
#     RECON_DICOM_UID_ROOT, the patient and study from the identity options,
#     see docs/PACS.md). A 3D image becomes one file per slice:
#     NAME-0000.png, NAME-0000.dcm, NAME-0001.png, NAME-0001.dcm, ...
#     (one DICOM series). Options fov_mm and slice_thickness_mm set the
#     geometry (default: 1 mm pixels and slices).
#   * If any input is not part of a BART pair (a GE P-file such as P00000.7,
#     anything else), writes manifest.txt listing every input file with its
#     size and SHA-256, so any data can flow through.
#   Option threads=N sets OMP_NUM_THREADS for BART (default: BART's choice).
#
# Messages name no server paths: standard error ends up in the job's error
# message, which the client sees.
#
# Sites replace this script with their own; keep its calling convention.

set -euo pipefail
umask 077
export LC_ALL=C
# BART uses OpenMP; busy-waiting threads slow everything down badly when
# several jobs share the machine.
export OMP_WAIT_POLICY=PASSIVE

prog=${0##*/}

log() { printf '%s: %s\n' "$prog" "$*"; }
die() {
	printf '%s: error: %s\n' "$prog" "$*" >&2
	exit 1
}
usage() {
	printf 'usage: %s INPUT_DIR --output-dir OUTPUT_DIR\n' "$prog" >&2
	exit 2
}

input=
output=
have_output=false
while (($# > 0)); do
	case $1 in
	--output-dir)
		(($# >= 2)) || { printf '%s: --output-dir needs a directory\n' "$prog" >&2; usage; }
		output=$2 have_output=true
		shift 2
		;;
	--output-dir=*)
		output=${1#--output-dir=} have_output=true
		shift
		;;
	-h | --help)
		printf 'usage: %s INPUT_DIR --output-dir OUTPUT_DIR\n' "$prog"
		exit 0
		;;
	-*)
		printf '%s: unknown option %q\n' "$prog" "$1" >&2
		usage
		;;
	*)
		[[ -z $input ]] || { printf '%s: more than one input dir\n' "$prog" >&2; usage; }
		input=$1
		shift
		;;
	esac
done
[[ -n $input ]] || { printf '%s: no input dir\n' "$prog" >&2; usage; }
if ! $have_output || [[ -z $output ]]; then
	printf '%s: no --output-dir\n' "$prog" >&2
	usage
fi
[[ -d $input ]] || die "the input dir is not a directory"
mkdir -p -- "$output"
input=$(cd -- "$input" && pwd -P)
output=$(cd -- "$output" && pwd -P)

method=${RECON_OPT_METHOD:-fft}
case $method in
fft | pics) ;;
*) die "unknown method $(printf '%q' "$method"): use method=fft or method=pics" ;;
esac
if [[ -n ${RECON_OPT_THREADS:-} ]]; then
	[[ $RECON_OPT_THREADS =~ ^[1-9][0-9]{0,3}$ ]] ||
		die "threads must be a whole number from 1 to 9999, not $(printf '%q' "$RECON_OPT_THREADS")"
	export OMP_NUM_THREADS=$RECON_OPT_THREADS
fi

# Sort the inputs into BART pairs and everything else.
shopt -s nullglob dotglob
pairs=()
others=()
files=()
for f in "$input"/*; do
	name=${f##*/}
	if [[ -L $f || ! -f $f ]]; then
		log "ignoring $(printf '%q' "$name"): not a regular file"
		continue
	fi
	files+=("$name")
	case $name in
	*.cfl)
		base=${name%.cfl}
		if [[ -n $base && -f $input/$base.hdr && ! -L $input/$base.hdr ]]; then
			pairs+=("$base")
			continue
		fi
		;;
	*.hdr)
		base=${name%.hdr}
		if [[ -n $base && -f $input/$base.cfl && ! -L $input/$base.cfl ]]; then
			continue # listed with its .cfl
		fi
		;;
	esac
	others+=("$name")
done
((${#files[@]} > 0)) || die "no input files"
log "job ${RECON_JOB_ID:-?}: ${#pairs[@]} BART k-space pair(s), ${#others[@]} other file(s), method $method"

if ((${#pairs[@]} > 0)) && ! command -v bart >/dev/null 2>&1; then
	die "bart not found: install the Debian package bart"
fi
recon=
if ((${#pairs[@]} > 0)); then
	recon=${RECON_BIN:-$(command -v recon || true)}
	[[ -n $recon && -x $recon ]] ||
		die "recon not found (it writes the DICOM images): the server sets RECON_BIN; else put recon on PATH"
fi

# BART writes its intermediates in a private folder inside the output dir,
# under plain names (BART gives meaning to some file name suffixes), and
# only finished files are moved into place.
work=
cleanup() { [[ -z $work ]] || rm -rf -- "$work"; }
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
work=$(mktemp -d -- "$output/.recon-work.XXXXXX")

# publish WORK_PREFIX EXT DEST_PREFIX: move WORK_PREFIX.EXT (or the
# numbered WORK_PREFIX-NNNN.EXT of several images) to DEST_PREFIX likewise.
publish() {
	local from=$1 ext=$2 to=$3 f
	for f in "$work/$from.$ext" "$work/$from"-[0-9][0-9][0-9][0-9]."$ext"; do
		[[ -e $f ]] || continue
		mv -- "$f" "$to${f#"$work/$from"}"
	done
}

for name in "${pairs[@]}"; do
	rm -rf -- "${work:?}"/*
	ln -s -- "$input/$name.cfl" "$work/kspace.cfl"
	ln -s -- "$input/$name.hdr" "$work/kspace.hdr"
	(
		cd -- "$work"
		coils=$(bart show -d 3 kspace)
		depth=$(bart show -d 2 kspace)
		mask=3 # read and phase encoding
		((depth == 1)) || mask=7 # 3D k-space
		log "$name: $coils coil(s), FFT bitmask $mask, method $method"
		case $method in
		fft)
			bart fft -u -i "$mask" kspace coilimg
			if ((coils > 1)); then
				bart rss 8 coilimg image
			else
				mv coilimg.cfl image.cfl
				mv coilimg.hdr image.hdr
			fi
			;;
		pics)
			bart ecalib -m1 kspace sens
			bart pics -l1 -r0.01 kspace sens image
			;;
		esac
		bart toimg image image.png
		"$recon" dicom --method "$method" image image >/dev/null
	)
	mv -- "$work/image.cfl" "$output/${name}_recon.cfl"
	mv -- "$work/image.hdr" "$output/${name}_recon.hdr"
	publish image png "$output/$name"
	publish image dcm "$output/$name"
	log "$name: wrote ${name}_recon.cfl/.hdr and the image(s) as $name.png/.dcm"
done

if ((${#others[@]} > 0)); then
	{
		printf '# recon input manifest: name<TAB>size<TAB>sha256\n'
		for name in "${files[@]}"; do
			size=$(stat -c %s -- "$input/$name")
			hash=$(sha256sum <"$input/$name")
			printf '%s\t%s\t%s\n' "$name" "$size" "${hash%% *}"
		done
	} >"$work/manifest.txt"
	mv -- "$work/manifest.txt" "$output/manifest.txt"
	log "wrote manifest.txt (${#files[@]} input file(s))"
fi
log "done"
