package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/sandbox"
	"github.com/kilnbuild/kiln/internal/sysinfo"
	"github.com/kilnbuild/kiln/internal/worker"
)

// knownCross are the cross targets Debian packages a toolchain for, with
// the packages that add one (the doctor's install line): gcc-TRIPLE,
// libc6-dev-DEBARCH-cross and qemu-user, or for Windows the packages
// given.
var knownCross = []struct {
	triple, debArch string
	install         []string
}{
	{"s390x-linux-gnu", "s390x", nil}, {"i686-linux-gnu", "i386", nil}, {"arm-linux-gnueabihf", "armhf", nil},
	{"powerpc-linux-gnu", "powerpc", nil}, {"aarch64-linux-gnu", "arm64", nil}, {"riscv64-linux-gnu", "riscv64", nil},
	{"powerpc64le-linux-gnu", "ppc64el", nil}, {"powerpc64-linux-gnu", "ppc64", nil},
	{"mips64el-linux-gnuabi64", "mips64el", nil}, {"sparc64-linux-gnu", "sparc64", nil},
	{"m68k-linux-gnu", "m68k", nil}, {"hppa-linux-gnu", "hppa", nil},
	{"x86_64-w64-mingw32", "", []string{"gcc-mingw-w64-x86-64", "wine64"}},
	{"i686-w64-mingw32", "", []string{"gcc-mingw-w64-i686", "wine32:i386"}},
}

// doctor checks what this machine can do as a volunteer and says how to
// fix what it cannot: user namespaces, bubblewrap (as the build users when
// root), binfmt_misc and qemu-user, every target --target auto would offer
// (each probed: built and run, directly too), the data directory's free
// space, and the metaserver when one is named. It prints the targets it
// would offer and one apt-get line for what is missing, and returns 0 when
// the machine can volunteer (a working sandbox, a target, and the
// metaserver answering when --metaserver was given), else 1.
func doctor(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("buildserver doctor", flag.ContinueOnError)
	fs.SetOutput(out)
	metaserver := fs.String("metaserver", "", "metaserver gRPC address to check (optional)")
	ca := fs.String("ca", "", "PEM CA certificate(s) of the metaserver's TLS certificate")
	dataDir := fs.String("data-dir", os.TempDir(), "data directory whose free space to check; the probes run there")
	buildUID := fs.Uint("build-uid", DefaultBuildUID, "as root: the first build uid to check bubblewrap with")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	ok := true
	var install []string
	line := func(status, what string, fix ...string) {
		fmt.Fprintf(out, "%-5s %s\n", status, what)
		for _, p := range fix {
			if !slices.Contains(install, p) {
				install = append(install, p)
			}
		}
	}

	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil && strings.TrimSpace(string(b)) == "0" {
		ok = false
		line("FAIL", "user namespaces are disabled (user.max_user_namespaces=0): sysctl -w user.max_user_namespaces=15000")
	} else if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && strings.TrimSpace(string(b)) == "0" {
		ok = false
		line("FAIL", "unprivileged user namespaces are disabled: sysctl -w kernel.unprivileged_userns_clone=1")
	} else {
		line("ok", "user namespaces")
	}

	var as *sandbox.User
	who := "this user"
	if os.Geteuid() == 0 {
		as = &sandbox.User{UID: uint32(*buildUID), GID: uint32(*buildUID)}
		who = "build uid " + strconv.FormatUint(uint64(*buildUID), 10)
	}
	if _, err := exec.LookPath("bwrap"); err != nil {
		ok = false
		line("FAIL", "bubblewrap is not installed (no bwrap on PATH): builds cannot be sandboxed; fix: apt-get install bubblewrap", "bubblewrap")
	} else if err := (sandbox.Bwrap{}).AvailableAs(as); err != nil {
		ok = false
		line("FAIL", "bubblewrap: "+err.Error(), "bubblewrap")
	} else {
		line("ok", "bubblewrap runs a sandbox as "+who)
	}

	specs, skipped := sysinfo.Discover()
	if _, err := os.Stat("/proc/sys/fs/binfmt_misc/register"); err != nil {
		if foreign := foreignTargets(specs, skipped); len(foreign) > 0 {
			// The packaged build server runs as its own user and cannot
			// mount it; builds of foreign targets run their programs
			// (configure tests, make check) directly.
			ok = false
			line("FAIL", "binfmt_misc is not mounted: programs built for "+strings.Join(foreign, ", ")+" cannot run directly (the packaged build server runs as its own user and cannot mount it); "+binfmtFix,
				"qemu-user", "qemu-user-binfmt", "binfmt-support")
		} else {
			line("warn", "binfmt_misc is not mounted (no foreign toolchain installed, so nothing needs it yet); "+binfmtFix)
		}
	} else {
		line("ok", "binfmt_misc mounted")
	}

	for _, sk := range skipped {
		line("skip", "target "+sk.ID+": "+sk.Reason, sk.Install...)
	}
	for _, k := range knownCross {
		if slices.ContainsFunc(specs, func(s sysinfo.TargetSpec) bool { return s.Triple == k.triple }) ||
			slices.ContainsFunc(skipped, func(s sysinfo.Skipped) bool { return s.ID == "cross:"+k.triple }) {
			continue
		}
		install := k.install
		if install == nil {
			install = []string{"gcc-" + k.triple, "libc6-dev-" + k.debArch + "-cross", "qemu-user", "qemu-user-binfmt"}
		}
		line("skip", "target cross:"+k.triple+": no "+k.triple+"-gcc", install...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	targets, rejected, _ := worker.ProbeAll(ctx, specs, nil, *dataDir, quiet)
	var offered []string
	for _, t := range targets {
		offered = append(offered, t.Info.GetId())
		line("ok", "target "+t.Info.GetId()+": "+platform.Describe(t.Info.GetSystem()))
	}
	for _, r := range rejected {
		var fix []string
		if strings.Contains(r.GetReason(), "libc6-i386") {
			fix = []string{"libc6-i386"}
		}
		line("FAIL", "target "+r.GetTargetId()+": "+r.GetReason(), fix...)
	}
	if len(targets) == 0 {
		ok = false
	}

	var st unix.Statfs_t
	if err := unix.Statfs(*dataDir, &st); err != nil {
		line("warn", "disk: "+err.Error())
	} else if free := int64(st.Bavail) * int64(st.Bsize); free < worker.DefaultMinFreeDiskBytes {
		ok = false
		line("FAIL", fmt.Sprintf("disk: %d MiB free in %s, builds stop below %d MiB", free>>20, *dataDir, worker.DefaultMinFreeDiskBytes>>20))
	} else {
		line("ok", fmt.Sprintf("disk: %d GiB free in %s", free>>30, *dataDir))
	}

	if *metaserver != "" {
		if err := checkMetaserver(ctx, *metaserver, *ca); err != nil {
			ok = false
			line("FAIL", "metaserver "+*metaserver+": "+err.Error())
		} else {
			line("ok", "metaserver "+*metaserver+" answers (the credential is checked when the build server connects)")
		}
	}

	fmt.Fprintf(out, "\nwould offer: %s\n", strings.Join(offered, " "))
	if len(install) > 0 {
		fmt.Fprintf(out, "to add what is missing: apt-get install -y --no-install-recommends %s\n", strings.Join(install, " "))
	}
	if !ok {
		fmt.Fprintln(out, "this machine cannot volunteer yet: fix the FAIL lines above")
		return exitFailure
	}
	fmt.Fprintln(out, "this machine can volunteer")
	return 0
}

// binfmtFix is what mounts binfmt_misc and registers Debian's qemu
// handlers (both survive a reboot once binfmt-support is installed).
const binfmtFix = "fix: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable"

// foreignTargets lists the cross targets whose toolchain is installed,
// offered or skipped.
func foreignTargets(specs []sysinfo.TargetSpec, skipped []sysinfo.Skipped) []string {
	var out []string
	for _, s := range specs {
		if s.Triple != "" {
			out = append(out, s.Triple)
		}
	}
	for _, s := range skipped {
		if t, ok := strings.CutPrefix(s.ID, "cross:"); ok {
			out = append(out, t)
		}
	}
	return out
}

// checkMetaserver asks the metaserver's standard health service.
func checkMetaserver(ctx context.Context, addr, ca string) error {
	transport, _, err := auth.ClientTLS{CAFile: ca}.DialCredentials(addr)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(addr, transport)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("not serving (%s)", res.GetStatus())
	}
	return nil
}
