#!/usr/bin/env bash
# Installs what Kiln needs on a fresh Debian 12 machine (idempotent):
# bubblewrap (build sandbox), qemu-user + Debian cross compilers + musl (foreign
# targets; libc6-i386 runs i686 binaries on kernels that execute them
# natively), the build systems of the default recipe, postfix's smtp-sink
# (mail tests), chromium (browser tests), dpkg-dev (the acceptance suite's
# apt-get source unpacks with dpkg-source), the protobuf tools (buf,
# protoc-gen-go, protoc-gen-go-grpc) for the proto check, and golangci-lint
# for `make lint`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

pkgs=(qemu-user qemu-user-binfmt binfmt-support
  gcc-s390x-linux-gnu gcc-i686-linux-gnu gcc-arm-linux-gnueabihf gcc-powerpc-linux-gnu
  libc6-dev-s390x-cross libc6-dev-i386-cross libc6-dev-armhf-cross libc6-dev-powerpc-cross
  libc6-i386 lib32gcc-s1
  musl-tools bubblewrap postfix chromium git make gcc util-linux
  # The build servers' compiler cache (internal/worker/ccache.go).
  ccache
  # What the default recipe runs (docs/manifest.md): autotools (autoreconf
  # with libtool and gettext's autopoint), CMake, Meson + Ninja, pkg-config,
  # a C++ compiler for every target (CMake projects enable C++ by default),
  # and the kernel headers the musl target links in; dpkg-dev for the
  # acceptance suite.
  dpkg-dev autoconf automake libtool autopoint gettext cmake meson ninja-build pkg-config g++
  g++-s390x-linux-gnu g++-i686-linux-gnu g++-arm-linux-gnueabihf g++-powerpc-linux-gnu linux-libc-dev)
# buf comes from npm (the Go module proxy, Debian and npm are the registries here).
command -v npm >/dev/null || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
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
# The linter, pinned: another version may find other things (.golangci.yml).
[ "$(golangci-lint version --short 2>/dev/null)" = "2.15.0" ] ||
  go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/.tools/node_modules/@bufbuild/buf-linux-x64/bin/buf" ]; then
  mkdir -p "$root/.tools"
  (cd "$root/.tools" && npm install --silent --no-audit --no-fund @bufbuild/buf@1.73.0 >/dev/null)
fi
echo "setup: done"
