# Shared helpers for Swiftlet's shell tooling (sourced, not executed).
# shellcheck shell=bash

SWIFTLET_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SWIFTLET_CACHE=${SWIFTLET_CACHE:-$HOME/.cache/swiftlet}
GUEST_DIR=${SWIFTLET_GUEST_DIR:-$SWIFTLET_CACHE/guest}

die() { echo "${0##*/}: $*" >&2; exit 1; }
note() { echo "${0##*/}: $*" >&2; }

_apt_updated=
apt_update_once() {
  [ -n "$_apt_updated" ] && return 0
  note "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
  _apt_updated=1
}

# ensure_pkgs PKG...: install the missing Debian packages (quiet when all are present).
ensure_pkgs() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing packages (run as root or install them): ${missing[*]}"
  apt_update_once
  note "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# ensure_guest: build the default guest unless it is present and current (scripts/build-guest
# compares its stamp: kernel and busybox versions and the builder script's own hash, so a change
# to the guest's init rebuilds it); sets KVER.
ensure_guest() {
  SWIFTLET_GUEST_DIR=$GUEST_DIR "$SWIFTLET_REPO/scripts/build-guest" >/dev/null
  KVER=$(cat "$GUEST_DIR/kernel-version")
}

# static_tool NAME: build tools/NAME/NAME.c as a static binary into the cache if needed (or if the
# source is newer) and print its path.
static_tool() {
  local src=$SWIFTLET_REPO/tools/$1/$1.c out=$SWIFTLET_CACHE/$1
  if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
    ensure_pkgs gcc libc6-dev >&2
    mkdir -p "$SWIFTLET_CACHE"
    gcc -O2 -static -Wall -o "$out.tmp" "$src" >&2 && mv "$out.tmp" "$out" || die "building $1 failed"
  fi
  echo "$out"
}

# ensure_vmmbench: the static timer (tools/vmmbench); sets VMMBENCH.
ensure_vmmbench() { VMMBENCH=$(static_tool vmmbench); }

# ensure_kvmpin: the static kvm-pin helper (tools/kvm-pin, started in the lab's L2); sets KVMPIN.
ensure_kvmpin() { KVMPIN=$(static_tool kvm-pin); }

# ensure_vsockecho: the static vsock test tool (tools/vsock-echo, in the default guest and in the
# lab's L2); sets VSOCKECHO.
ensure_vsockecho() { VSOCKECHO=$(static_tool vsock-echo); }

# build_swiftlet: a fully static release build of swiftlet (it runs in the lab, which has no Swift
# toolchain, and starts faster there than a dynamically linked one: no relocations to process under
# TCG); prints the binary's path. Build output goes to stderr.
build_swiftlet() {
  command -v swift >/dev/null || die "the Swift toolchain (swift) is not on PATH"
  ensure_pkgs libc6-dev
  mkdir -p "$SWIFTLET_CACHE"
  local log=$SWIFTLET_CACHE/build-release.log
  note "building swiftlet (release, static; log: $log)"
  if ! (cd "$SWIFTLET_REPO" && swift build -c release -Xswiftc -static-executable --product swiftlet) > "$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "swift build failed (full log: $log)"
  fi
  echo "$SWIFTLET_REPO/.build/release/swiftlet"
}

# run_lab LOG KEEPLOG LAB-ARGS...: runs scripts/lab LAB-ARGS with its output shown as it comes;
# leaves L2's console, carriage returns stripped, in LOG (and a copy in KEEPLOG unless that is
# empty) and scripts/lab's exit status in LAB_RC. Does not fail itself, whatever the lab does.
run_lab() {
  local log=$1 keep=$2 opts=$-
  shift 2
  set +e
  "$SWIFTLET_REPO/scripts/lab" "$@" | tee "$log.raw"
  LAB_RC=${PIPESTATUS[0]}
  case "$opts" in *e*) set -e ;; esac
  tr -d '\r' < "$log.raw" > "$log"
  rm -f "$log.raw"
  if [ -n "$keep" ]; then cp "$log" "$keep"; fi
}

# lab_froze LOG: true when the run_lab whose console is LOG froze or got stuck (scripts/lab's status
# 3, and no LAB-END line: a script of its own that ends with status 3 has one).
lab_froze() { [ "${LAB_RC:-}" = 3 ] && ! grep -q '^LAB-END rc=' "$1"; }
