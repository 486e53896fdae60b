#!/usr/bin/env bash
# Installs what Kiln needs on a fresh Debian 12 machine (idempotent):
# bubblewrap (build sandbox), qemu-user + Debian cross compilers + musl (foreign
# targets; libc6-i386 runs i686 binaries on kernels that execute them
# natively; mingw-w64 and wine for the two Windows targets, 32-bit wine
# from the i386 architecture), the build systems of the default recipe, postfix's smtp-sink
# (mail tests), chromium (browser tests), dpkg-dev (the acceptance suite's
# apt-get source unpacks with dpkg-source), the protobuf tools (buf,
# protoc-gen-go, protoc-gen-go-grpc, protoc-gen-go-vtproto) for the proto check, golangci-lint
# for `make lint`, and the servers the scaled-out store is tested against:
# Debian's PostgreSQL and versitygw (an S3-compatible server, Go,
# Apache-2.0, from the Go module proxy).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

pkgs=(qemu-user qemu-user-binfmt binfmt-support
  gcc-s390x-linux-gnu gcc-i686-linux-gnu gcc-arm-linux-gnueabihf gcc-powerpc-linux-gnu
  libc6-dev-s390x-cross libc6-dev-i386-cross libc6-dev-armhf-cross libc6-dev-powerpc-cross
  libc6-i386 lib32gcc-s1
  musl-tools bubblewrap postfix chromium git make gcc util-linux
  # The PostgreSQL store's tests start a throwaway cluster (initdb).
  postgresql
  # The build servers' compiler cache (internal/worker/ccache.go).
  ccache
  # The metaserver's report on a not-reproducible build
  # (internal/server/diffoscope.go); the minimal package: 175 kB, 844 kB
  # installed, about 8 s with its two python3 dependencies.
  diffoscope-minimal
  # What the default recipe runs (docs/manifest.md): autotools (autoreconf
  # with libtool and gettext's autopoint), CMake, Meson + Ninja, pkg-config,
  # a C++ compiler for every target (CMake projects enable C++ by default),
  # and the kernel headers the musl target links in; dpkg-dev for the
  # acceptance suite.
  dpkg-dev autoconf automake libtool autopoint gettext cmake meson ninja-build pkg-config g++
  g++-s390x-linux-gnu g++-i686-linux-gnu g++-arm-linux-gnueabihf g++-powerpc-linux-gnu linux-libc-dev
  # Platform breadth (docs/platforms.md): eight more Linux architectures
  # (C only: the e2e tests build Makefile projects; a volunteer building
  # CMake projects for them adds g++-TRIPLE) and Windows through
  # mingw-w64 and wine. About 6.5 minutes of CI on a fresh machine
  # (measured: 116 s, 105 s and 175 s for the three groups).
  gcc-aarch64-linux-gnu gcc-riscv64-linux-gnu gcc-powerpc64le-linux-gnu gcc-powerpc64-linux-gnu
  gcc-mips64el-linux-gnuabi64 gcc-sparc64-linux-gnu gcc-m68k-linux-gnu gcc-hppa-linux-gnu
  libc6-dev-arm64-cross libc6-dev-riscv64-cross libc6-dev-ppc64el-cross libc6-dev-ppc64-cross
  libc6-dev-mips64el-cross libc6-dev-sparc64-cross libc6-dev-m68k-cross libc6-dev-hppa-cross
  gcc-mingw-w64-x86-64 gcc-mingw-w64-i686 wine64 wine32:i386

  # The packages' maintainer scripts make their user and data directory
  # with systemd-sysusers and systemd-tmpfiles (the package test installs
  # them into a throwaway root with dpkg --root).
  systemd)
# buf comes from npm (the Go module proxy, Debian and npm are the registries here).
command -v npm >/dev/null || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # wine32 (32-bit Windows programs) is an i386 package.
  dpkg --print-foreign-architectures | grep -qx i386 || $SUDO dpkg --add-architecture i386
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  # postfix asks questions unless told not to configure a mail system.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! grep -q binfmt_misc /proc/mounts; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || echo "setup: could not mount binfmt_misc (emulated targets use explicit qemu)"
fi
$SUDO update-binfmts --enable >/dev/null 2>&1 || true

# Protobuf generators and buf, pinned (the proto check regenerates and diffs).
export PATH="$(go env GOPATH)/bin:$PATH"
# The generated files name the generator's version, so another version would
# fail the check: install the pinned one unless it is the one on PATH.
[ "$(protoc-gen-go --version 2>/dev/null)" = "protoc-gen-go v1.36.12" ] ||
  go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
[ "$(protoc-gen-go-grpc --version 2>/dev/null)" = "protoc-gen-go-grpc 1.6.2" ] ||
  go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
# vtprotobuf's generator at the version go.mod already requires (grpc's
# own dependencies pin it): startcompile decodes with its code.
vtproto=v0.6.1-0.20240319094008-0393e58bdf10
# It has no --version: its build information names the module's version.
go version -m "$(command -v protoc-gen-go-vtproto 2>/dev/null || echo /nonexistent)" 2>/dev/null |
  grep -qE "^[[:space:]]+mod[[:space:]]+github.com/planetscale/vtprotobuf[[:space:]]+$vtproto([[:space:]]|\$)" ||
  go install "github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@$vtproto"
# The linter, pinned: another version may find other things (.golangci.yml).
[ "$(golangci-lint version --short 2>/dev/null)" = "2.15.0" ] ||
  go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/.tools/node_modules/@bufbuild/buf-linux-x64/bin/buf" ]; then
  mkdir -p "$root/.tools"
  (cd "$root/.tools" && npm install --silent --no-audit --no-fund @bufbuild/buf@1.73.0 >/dev/null)
fi
# The S3-compatible server of the S3 blob store's tests (farmtest.StartS3),
# pinned; about 1-2 minutes to build cold, nothing when already there.
# The marker names the version: go install's binary does not know its own.
gobin="$(go env GOPATH)/bin"
[ -x "$gobin/versitygw" ] && [ -f "$gobin/.versitygw-v1.8.0" ] ||
  { go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 && touch "$gobin/.versitygw-v1.8.0"; }
echo "setup: done"
