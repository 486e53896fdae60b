#!/usr/bin/env bash
# Release artifacts (`make release`): static binaries of the four programs
# for each Linux architecture, Debian packages kiln-buildserver and
# kiln-metaserver for each, and a SHA256SUMS file over all of them.
#
#   scripts/release.sh [--out DIR] [--version V] [--arch A]... [--program P]... [--no-deb] [--lint]
#
# A is one of amd64 arm64 armv7 ppc64le s390x riscv64 (default: all six);
# P narrows the programs built (default: all four; a package is made only
# when all its programs are built). Tests use both to build only what they
# run.
# DIR (default dist) gets:
#   kiln_V_linux-A/{metaserver,buildserver,startcompile,webstatus}
#   kiln-buildserver_V_DEBARCH.deb  kiln-metaserver_V_DEBARCH.deb
#   SHA256SUMS
# The binaries are static (CGO_ENABLED=0), stripped and built with
# -trimpath; the version defaults to 0.1.0~gitDATE.COMMIT (a native Debian
# version). The packages are made with dpkg-deb from packaging/; --lint
# runs lintian on them and fails on any error or warning (lintian must be
# installed: it is not by scripts/setup.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out=dist version="" lint=no nodeb=no arches=() programs=()
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out="$2"; shift 2 ;;
	--version) version="$2"; shift 2 ;;
	--arch) arches+=("$2"); shift 2 ;;
	--program) programs+=("$2"); shift 2 ;;
	--no-deb) nodeb=yes; shift ;;
	--lint) lint=yes; shift ;;
	*) echo "release: unknown argument $1" >&2; exit 2 ;;
	esac
done
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 armv7 ppc64le s390x riscv64)
GO="${GO:-go}"
commit="$(git rev-parse --short=12 HEAD)"
date_rfc="$(git log -1 --format=%cD HEAD)"
[ -n "$version" ] || version="0.1.0~git$(git log -1 --format=%cd --date=format:%Y%m%d HEAD).$commit"
case "$version" in [0-9]*) ;; *) echo "release: version $version must start with a digit (Debian)" >&2; exit 2 ;; esac
mkdir -p "$out"
out="$(cd "$out" && pwd)"
[ ${#programs[@]} -gt 0 ] || programs=(metaserver buildserver startcompile webstatus)
for p in "${programs[@]}"; do
	case "$p" in metaserver | buildserver | startcompile | webstatus) ;; *) echo "release: unknown program $p" >&2; exit 2 ;; esac
done

# goenv A: the GOARCH (and GOARM) of A; debarch A: its Debian name.
goenv() {
	case "$1" in
	amd64 | arm64 | ppc64le | s390x | riscv64) echo "GOARCH=$1" ;;
	armv7) echo "GOARCH=arm GOARM=7" ;;
	*) echo "release: unknown architecture $1 (amd64 arm64 armv7 ppc64le s390x riscv64)" >&2; return 2 ;;
	esac
}
debarch() {
	case "$1" in armv7) echo armhf ;; ppc64le) echo ppc64el ;; *) echo "$1" ;; esac
}

# build A: the four static programs for A.
build() {
	local a="$1" env dir
	env="$(goenv "$a")"
	dir="$out/kiln_${version}_linux-$a"
	mkdir -p "$dir"
	for p in "${programs[@]}"; do
		env CGO_ENABLED=0 GOOS=linux $env "$GO" build -trimpath -buildvcs=false \
			-ldflags "-s -w -buildid= -X main.version=$version" -o "$dir/$p" "./$p"
	done
}

# deb PKG A USER DIR PURGE_DATA CONF PROGRAMS... : one Debian package.
deb() {
	local pkg="$1" a="$2" user="$3" dir="$4" purge="$5" conf="$6"
	shift 6
	local stage bin="$out/kiln_${version}_linux-$a" src="packaging/deb/$pkg" unit units="" p
	[ "$nodeb" = no ] || return 0
	for p in "$@"; do [[ " ${programs[*]} " == *" $p "* ]] || return 0; done
	stage="$(mktemp -d)"
	install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
		"$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" "$stage/usr/share/doc/$pkg" "$stage/etc/kiln"
	install -d -m 0755 "$stage/usr/share/lintian/overrides"
	local page sec
	for p in "$@"; do
		install -m 0755 "$bin/$p" "$stage/usr/bin/$p"
		page="$(echo packaging/man/"$p".[18])"
		sec="${page##*.}"
		install -d -m 0755 "$stage/usr/share/man/man$sec"
		gzip -9n <"$page" >"$stage/usr/share/man/man$sec/$p.$sec.gz"
		chmod 0644 "$stage/usr/share/man/man$sec/$p.$sec.gz"
		# Go links statically; lintian knows it only from a source
		# package's Build-Depends on golang, which dpkg-deb has not.
		echo "$pkg: statically-linked-binary [usr/bin/$p]" >>"$stage/usr/share/lintian/overrides/$pkg"
	done
	chmod 0644 "$stage/usr/share/lintian/overrides/$pkg"
	for unit in packaging/systemd/*.service; do
		case "$pkg:$(basename "$unit")" in
		kiln-buildserver:kiln-buildserver.service | kiln-metaserver:kiln-metaserver.service | kiln-metaserver:kiln-webstatus.service)
			install -m 0644 "$unit" "$stage/lib/systemd/system/"
			units="$units $(basename "$unit")" ;;
		esac
	done
	install -m 0644 "$src/sysusers.conf" "$stage/usr/lib/sysusers.d/$pkg.conf"
	install -m 0644 "$src/tmpfiles.conf" "$stage/usr/lib/tmpfiles.d/$pkg.conf"
	local conffiles=""
	for f in "$src"/default-*; do
		[ -e "$f" ] || continue
		install -d -m 0755 "$stage/etc/default"
		install -m 0644 "$f" "$stage/etc/default/${f##*/default-}"
		conffiles="$conffiles/etc/default/${f##*/default-}"$'\n'
	done
	for d in volunteer.md operator.md; do install -m 0644 "docs/$d" "$stage/usr/share/doc/$pkg/$d"; done
	cat >"$stage/usr/share/doc/$pkg/copyright" <<-COPYRIGHT
		Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
		Upstream-Name: kiln
		Source: https://github.com/kilnbuild/kiln

		Files: *
		Copyright: 2025-2026 The Kiln authors
		License: unknown
		 The Kiln repository names no license yet; see its README.
	COPYRIGHT
	chmod 0644 "$stage/usr/share/doc/$pkg/copyright"
	printf '%s (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- Kiln developers <kiln-devel@lists.kilnbuild.org>  %s\n' \
		"$pkg" "$version" "$commit" "$date_rfc" | gzip -9n >"$stage/usr/share/doc/$pkg/changelog.gz"
	chmod 0644 "$stage/usr/share/doc/$pkg/changelog.gz"
	local s
	for s in postinst prerm postrm; do
		sed -e "s|@PKG@|$pkg|g; s|@USER@|$user|g; s|@DIR@|$dir|g; s|@UNITS@|${units# }|g" \
			-e "s|@GECOS@|Kiln $dir|g; s|@PURGE_DATA@|$purge|g; s|@PKG_CONF@|$conf|g" \
			"packaging/deb/$s.in" >"$stage/DEBIAN/$s"
		chmod 0755 "$stage/DEBIAN/$s"
	done
	[ -z "$conffiles" ] || { printf '%s' "$conffiles" >"$stage/DEBIAN/conffiles"; chmod 0644 "$stage/DEBIAN/conffiles"; }
	(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
	chmod 0644 "$stage/DEBIAN/md5sums"
	local size
	size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
	sed -e "s|@VERSION@|$version|; s|@ARCH@|$(debarch "$a")|; s|@SIZE@|$size|" "$src/control.in" >"$stage/DEBIAN/control"
	chmod 0644 "$stage/DEBIAN/control"
	find "$stage" -type d -exec chmod 0755 {} +
	# Every file's time is the commit's: the same commit gives the same package.
	find "$stage" -exec touch -h -d "$date_rfc" {} +
	SOURCE_DATE_EPOCH="$(git log -1 --format=%ct HEAD)" dpkg-deb --root-owner-group -Zxz --build "$stage" \
		"$out/${pkg}_${version}_$(debarch "$a").deb" >/dev/null
	rm -rf "$stage"
}

for a in "${arches[@]}"; do goenv "$a" >/dev/null; done
start=$SECONDS
for a in "${arches[@]}"; do
	build "$a"
	deb kiln-buildserver "$a" kiln-buildserver buildserver yes buildserver.conf buildserver
	deb kiln-metaserver "$a" kiln-metaserver metaserver no metaserver.conf metaserver webstatus startcompile
	echo "release: linux-$a done ($((SECONDS - start)) s so far)"
done
(cd "$out" && find . -type f \( -name "*_${version}_*.deb" -o -path "./kiln_${version}_linux-*/*" \) -printf '%P\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
if [ "$lint" = yes ] && [ "$nodeb" = no ]; then
	lintian --fail-on error,warning "$out"/*.deb
fi
echo "release: $version in $out ($((SECONDS - start)) s)"
