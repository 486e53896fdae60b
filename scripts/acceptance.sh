#!/usr/bin/env bash
# Kiln's acceptance suite: real upstream C projects, taken from Debian 12's
# source packages, built through a real farm on every platform Kiln offers.
#
#   scripts/acceptance.sh          the full suite (10 projects x 6 platforms),
#                                  writes ACCEPTANCE.md at the repository root
#   scripts/acceptance.sh --ci     the bounded subset `make test` runs
#                                  (3 projects x 3 platforms); fails unless
#                                  every cell succeeds
#   scripts/acceptance.sh --repro  reproducibility (issue 16): every cell built
#                                  by two build servers that differ in data
#                                  directory, host name and build uids; the
#                                  artifacts' sha256 compared, differing files
#                                  listed; its section goes into ACCEPTANCE.md
#                                  (default: 10 projects x native)
#
# Environment: KILN_ACCEPTANCE_CACHE (default .acceptance) holds the
# downloaded source packages and the git repositories made from them, reused
# by later runs; KILN_ACCEPTANCE_PROJECTS / KILN_ACCEPTANCE_PLATFORMS
# (space-separated) narrow a run; KILN_ACCEPTANCE_REPORT names the report.
#
# What a project is: the source Debian 12 ships, unpacked as `apt-get source`
# does (the upstream .orig tarball with Debian's patches applied), then
# debian/ and .pc/ removed, so Kiln sees an upstream tree with no packaging.
# The patches are upstream backports and security fixes (e.g. jansson's
# check-exports fix for binutils 2.40, without which its own test suite fails
# on every platform); none of them concerns cross building (checked: see
# each package's debian/patches/series in .acceptance/debs). Each tree
# becomes a git repository with one commit and no kiln.yaml. The one exception is the
# libpng "fork": a second commit adds the kiln.yaml that says it depends on
# zlib (the only kiln.yaml the suite adds).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${KILN_ACCEPTANCE_CACHE:-$root/.acceptance}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# name | Debian source package | what it covers (shown in ACCEPTANCE.md)
projects_table='
zlib|zlib|hand-written ./configure (not autotools), make test
lz4|lz4|plain Makefile honouring DESTDIR, make check
libffi|libffi|autotools with a shipped configure; per-architecture assembly (src/<arch>/*.S)
popt|popt|autotools with a shipped configure, libtool shared library, make check
libyaml|libyaml|autotools without configure: needs autoreconf (ships bootstrap + CMakeLists.txt)
jansson|jansson|autotools without configure: needs autoreconf (ships CMakeLists.txt too)
cjson|cjson|CMake (ctest)
serd|serd|Meson only (meson test)
tree|tree|plain Makefile whose install ignores DESTDIR (installs to /usr/local/man)
libpng|libpng1.6|depends on zlib through kiln.yaml depends: (a fork the suite makes)
'

all_platforms="native musl s390x armhf ppc i686"
ci_projects="zlib libyaml cjson"
ci_platforms="native s390x armhf"

mode=full
case "${1:-}" in
--ci) mode=ci ;;
--repro) mode=repro ;;
"") ;;
*) echo "usage: $0 [--ci|--repro]" >&2; exit 2 ;;
esac
if [ "$mode" = repro ]; then
  projects="${KILN_ACCEPTANCE_PROJECTS:-$(echo "$projects_table" | awk -F'|' 'NF>1{printf "%s ", $1}')}"
  platforms="${KILN_ACCEPTANCE_PLATFORMS:-native}"
  report="${KILN_ACCEPTANCE_REPORT:-$root/ACCEPTANCE.md}"
  strict="${KILN_ACCEPTANCE_STRICT:-0}"
elif [ "$mode" = ci ]; then
  projects="${KILN_ACCEPTANCE_PROJECTS:-$ci_projects}"
  platforms="${KILN_ACCEPTANCE_PLATFORMS:-$ci_platforms}"
  report="${KILN_ACCEPTANCE_REPORT:-$cache/ACCEPTANCE-ci.md}"
  strict=1
else
  projects="${KILN_ACCEPTANCE_PROJECTS:-$(echo "$projects_table" | awk -F'|' 'NF>1{printf "%s ", $1}')}"
  platforms="${KILN_ACCEPTANCE_PLATFORMS:-$all_platforms}"
  report="${KILN_ACCEPTANCE_REPORT:-$root/ACCEPTANCE.md}"
  strict=0
fi

# ensure_deb_src makes apt know source packages: Debian 12's image lists only
# binary ones. It adds a deb-src twin of debian.sources (or sources.list).
ensure_deb_src() {
  if [ -n "$(apt-cache showsrc zlib 2>/dev/null | head -1)" ]; then
    return
  fi
  local list=/etc/apt/sources.list.d/kiln-deb-src.sources
  echo "acceptance: enabling deb-src in $list"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources | $SUDO tee "$list" >/dev/null
  else
    list=/etc/apt/sources.list.d/kiln-deb-src.list
    grep -h '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' | $SUDO tee "$list" >/dev/null
  fi
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
}

# import NAME SRCPKG makes $cache/src/NAME, a git repository of SRCPKG's
# upstream tree, unless it is already there.
import() {
  local name=$1 pkg=$2 repo="$cache/src/$1"
  if git -C "$repo" rev-parse -q --verify HEAD >/dev/null 2>&1; then
    return
  fi
  local debs="$cache/debs/$pkg"
  mkdir -p "$debs"
  if ! ls "$debs"/*.dsc >/dev/null 2>&1; then
    # The release's version (pkg/bookworm) keeps the suite's sources stable;
    # the mirror may lack a security update's files anyway.
    echo "acceptance: apt-get source $pkg/bookworm"
    (cd "$debs" && { apt-get source --download-only -qq "$pkg/bookworm" ||
      apt-get source --download-only -qq "$pkg"; } 2>&1 | grep -v 'unsandboxed as root' || true)
    ls "$debs"/*.dsc >/dev/null 2>&1 || { echo "acceptance: apt-get source $pkg fetched no .dsc" >&2; exit 1; }
  fi
  local tmp
  tmp="$(mktemp -d "$cache/unpack.XXXXXX")"
  # apt-get source checked the files against the signed Sources index.
  dpkg-source --no-check -x "$(ls "$debs"/*.dsc | head -1)" "$tmp/tree" >/dev/null
  rm -rf "$tmp/tree/debian" "$tmp/tree/.pc"
  if [ -e "$tmp/tree/kiln.yaml" ]; then
    echo "acceptance: $pkg ships a kiln.yaml; the suite builds projects without one" >&2
    exit 1
  fi
  local version
  version="$(sed -n 's/^Version: //p' "$debs"/*.dsc | head -1)"
  (
    cd "$tmp/tree"
    export GIT_AUTHOR_NAME="Kiln acceptance" GIT_AUTHOR_EMAIL="acceptance@kiln.invalid"
    export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
    export GIT_AUTHOR_DATE="2023-06-10T00:00:00Z" GIT_COMMITTER_DATE="2023-06-10T00:00:00Z"
    git init -q -b main .
    # Upstream trees may ship their own .gitignore: take every file anyway.
    git add -A -f .
    git commit -q -m "$pkg $version: upstream tree with Debian's patches, without debian/"
    if [ "$name" = libpng ]; then
      fork_libpng
      git add kiln.yaml
      git commit -q -m "kiln: build against zlib for the same target (depends:)"
    fi
  )
  mkdir -p "$cache/src"
  mv "$tmp/tree" "$repo"
  rm -rf "$tmp"
}

# fork_libpng writes the only kiln.yaml the suite adds: libpng names zlib as
# a dependency; Kiln is to build zlib for the same platform first and stage
# it (CPPFLAGS, LDFLAGS, PKG_CONFIG_LIBDIR set for the steps).
fork_libpng() {
  cat >kiln.yaml <<'EOF'
# Added by Kiln's acceptance suite: libpng needs zlib built for the same
# platform, staged by Kiln with CPPFLAGS/LDFLAGS/PKG_CONFIG_LIBDIR pointing at it.
depends: [zlib]
requires: [make]
build:
  - |
    set -- ./configure
    if [ "$KILN_HOST_TRIPLE" != "$KILN_BUILD_TRIPLE" ]; then
      set -- "$@" --build="$KILN_BUILD_TRIPLE" --host="$KILN_HOST_TRIPLE"
    fi
    echo "+ $*"; "$@"
  - make -j"$KILN_JOBS"
check:
  # pngtest and the quick image tests; pngvalid's exhaustive runs take an
  # hour under qemu-user.
  - make check TESTS="tests/pngtest-all tests/pngimage-quick tests/pngunknown-discard"
package:
  - make install DESTDIR="$KILN_DESTDIR"
install_tree: true
timeout: 1h
EOF
}

# A cache made by an earlier layout of the import is made again.
layout=3
mkdir -p "$cache/src"
if [ "$(cat "$cache/src/LAYOUT" 2>/dev/null)" != "$layout" ]; then
  rm -rf "$cache/src"
  mkdir -p "$cache/src"
  echo "$layout" >"$cache/src/LAYOUT"
fi
ensure_deb_src
list="$cache/projects.tsv"
: >"$list.tmp"
for name in $projects; do
  line="$(echo "$projects_table" | grep "^$name|" || true)"
  [ -n "$line" ] || { echo "acceptance: unknown project $name" >&2; exit 2; }
  IFS='|' read -r _ pkg covers <<<"$line"
  import "$name" "$pkg"
  printf '%s\t%s\t%s\t%s\n' "$name" "$pkg" "$cache/src/$name" "$covers" >>"$list.tmp"
done
mv "$list.tmp" "$list"

echo "acceptance: $mode run: projects [$projects] x platforms [$platforms] -> $report"
cd "$root"
start=$(date +%s)
status=0
if [ "$mode" = repro ]; then
  KILN_ACCEPTANCE_REPRO="$list" KILN_ACCEPTANCE_PLATFORMS="$platforms" \
    KILN_ACCEPTANCE_REPORT="$report" KILN_ACCEPTANCE_STRICT="$strict" \
    go test -count=1 -timeout 8h -run '^TestAcceptanceRepro$' -v ./internal/acceptance/ || status=$?
else
  KILN_ACCEPTANCE="$list" KILN_ACCEPTANCE_PLATFORMS="$platforms" \
    KILN_ACCEPTANCE_REPORT="$report" KILN_ACCEPTANCE_STRICT="$strict" \
    go test -count=1 -timeout 8h -run '^TestAcceptance$' -v ./internal/acceptance/ || status=$?
fi
echo "acceptance: $(( $(date +%s) - start ))s; report in $report"
exit $status
