#!/usr/bin/env bash
# Starts a private Orthanc (Debian's orthanc + orthanc-dicomweb) for recon's
# PACS delivery tests, on 127.0.0.1 only, with HTTP basic auth on:
#
#   scripts/orthanc-up.sh DIR
#
# DIR (created when missing) holds everything: config, storage, index, log,
# the bind shim. Installs orthanc, orthanc-dicomweb and dcmtk with apt-get
# when they are missing (as root), keeping Debian's service from starting.
# Orthanc 1.10 has no bind-address option: a small LD_PRELOAD shim, compiled
# here with gcc, rewrites its bind(0.0.0.0) to 127.0.0.1, and `ss` checks
# that both listeners are on loopback. Ports are free ones picked at random
# (ORTHANC_HTTP_PORT and ORTHANC_DICOM_PORT override them).
#
# Writes DIR/env with `export ORTHANC_...=...` lines (source it):
#   ORTHANC_URL            http://127.0.0.1:PORT (the REST API)
#   ORTHANC_DICOMWEB_URL   $ORTHANC_URL/dicom-web
#   ORTHANC_USER, ORTHANC_PASSWORD   basic auth (the password is random)
#   ORTHANC_DICOM_PORT, ORTHANC_AET  the DIMSE listener
#   ORTHANC_HOME, ORTHANC_PID
# scripts/orthanc-down.sh DIR stops it.
set -euo pipefail
dir=${1:?usage: orthanc-up.sh DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

need=()
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "orthanc-up: missing ${need[*]}; install with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  # The package's postinst starts the system service (0.0.0.0, no auth):
  # a policy-rc.d that denies it is put in place for the install when the
  # system has none.
  tmp_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    tmp_policy=1
  fi
  echo "orthanc-up: installing ${need[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  rc=0
  { apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null &&
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } || rc=$?
  [ -z "$tmp_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || { echo "orthanc-up: apt-get failed ($rc)" >&2; exit 1; }
fi

if [ -e "$dir/orthanc.pid" ] && kill -0 "$(cat "$dir/orthanc.pid")" 2>/dev/null; then
  echo "orthanc-up: already running in $dir (pid $(cat "$dir/orthanc.pid"))" >&2
  exit 1
fi

# free_port prints a TCP port nothing on 127.0.0.1 listens on.
free_port() {
  local p
  for _ in $(seq 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return 0; fi
  done
  echo "orthanc-up: no free port found" >&2
  return 1
}
http_port=${ORTHANC_HTTP_PORT:-$(free_port)}
dicom_port=${ORTHANC_DICOM_PORT:-$(free_port)}
[ "$dicom_port" != "$http_port" ] || dicom_port=$(free_port)
user=${ORTHANC_USER:-recon}
aet=${ORTHANC_AET:-ORTHANC}
if [ -s "$dir/password" ]; then
  password=$(cat "$dir/password")
else
  password=${ORTHANC_PASSWORD:-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}
  (umask 077 && printf '%s' "$password" >"$dir/password")
fi

mkdir -p "$dir/storage" "$dir/index" "$dir/tmp"
cat >"$dir/bindlo.c" <<'C'
/* LD_PRELOAD shim: bind() to 0.0.0.0 binds to 127.0.0.1 instead. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static int (*real)(int, const struct sockaddr *, socklen_t);
  if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
  if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
    struct sockaddr_in in;
    memcpy(&in, addr, sizeof in);
    if (in.sin_addr.s_addr == htonl(INADDR_ANY)) {
      in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      return real(fd, (const struct sockaddr *)&in, sizeof in);
    }
  }
  return real(fd, addr, len);
}
C
gcc -shared -fPIC -O2 -o "$dir/bindlo.so" "$dir/bindlo.c" -ldl

cat >"$dir/orthanc.json" <<JSON
{
  "Name" : "recon-test-pacs",
  "StorageDirectory" : "$dir/storage",
  "IndexDirectory" : "$dir/index",
  "TemporaryDirectory" : "$dir/tmp",
  "Plugins" : [ "/usr/share/orthanc/plugins/libOrthancDicomWeb.so" ],
  "HttpServerEnabled" : true,
  "HttpPort" : $http_port,
  "RemoteAccessAllowed" : false,
  "AuthenticationEnabled" : true,
  "RegisteredUsers" : { "$user" : "$password" },
  "OrthancExplorerEnabled" : false,
  "WebDavEnabled" : false,
  "HttpDescribeErrors" : true,
  "KeepAlive" : true,
  "TcpNoDelay" : true,
  "DicomServerEnabled" : true,
  "DicomAet" : "$aet",
  "DicomPort" : $dicom_port,
  "DicomCheckCalledAet" : false,
  "DicomAlwaysAllowEcho" : true,
  "DicomAlwaysAllowStore" : true,
  "UnknownSopClassAccepted" : false,
  "OverwriteInstances" : false,
  "StorageCompression" : false,
  "SaveJobs" : false,
  "DeidentifyLogs" : false,
  "DicomWeb" : {
    "Enable" : true,
    "Root" : "/dicom-web/",
    "EnableWado" : true,
    "WadoRoot" : "/wado",
    "Host" : "127.0.0.1:$http_port",
    "Ssl" : false
  }
}
JSON
chmod 600 "$dir/orthanc.json"

LD_PRELOAD="$dir/bindlo.so" TCP_NODELAY=1 setsid /usr/sbin/Orthanc --logfile="$dir/orthanc.log" "$dir/orthanc.json" \
  </dev/null >/dev/null 2>&1 &
pid=$!
echo "$pid" >"$dir/orthanc.pid"

url="http://127.0.0.1:$http_port"
ok=
for _ in $(seq 300); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "orthanc-up: Orthanc exited at start; its log:" >&2
    tail -n 20 "$dir/orthanc.log" >&2 || true
    exit 1
  fi
  if curl -fsS -o /dev/null -u "$user:$password" "$url/dicom-web/studies" 2>/dev/null; then ok=1; break; fi
  sleep 0.1
done
if [ -z "$ok" ]; then
  echo "orthanc-up: Orthanc did not answer at $url within 30 s" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
fi
# Both listeners on loopback, nothing else.
listens=$(ss -Htlnp | grep "pid=$pid," | awk '{print $4}')
for a in $listens; do
  case "$a" in
    127.0.0.1:*) ;;
    *) echo "orthanc-up: Orthanc listens on $a, not only 127.0.0.1" >&2; kill "$pid"; exit 1 ;;
  esac
done
for p in "$http_port" "$dicom_port"; do
  echo "$listens" | grep -qx "127.0.0.1:$p" || { echo "orthanc-up: nothing on 127.0.0.1:$p" >&2; kill "$pid"; exit 1; }
done

cat >"$dir/env" <<ENV
export ORTHANC_HOME='$dir'
export ORTHANC_URL='$url'
export ORTHANC_DICOMWEB_URL='$url/dicom-web'
export ORTHANC_USER='$user'
export ORTHANC_PASSWORD='$password'
export ORTHANC_DICOM_PORT='$dicom_port'
export ORTHANC_AET='$aet'
export ORTHANC_PID='$pid'
ENV
chmod 600 "$dir/env"
echo "orthanc-up: Orthanc $pid on $url (DICOM 127.0.0.1:$dicom_port, AET $aet); environment in $dir/env" >&2
