package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kilnbuild/kiln/internal/auth"
)

// DefaultDataDir is the packaged build server's data directory (the
// kiln-buildserver package creates it, owned by its system user, 0700).
const DefaultDataDir = "/var/lib/kiln/buildserver"

// DefaultService is the packaged systemd unit `buildserver join` enables.
const DefaultService = "kiln-buildserver.service"

// joinOwnFlags are the flags join writes itself; giving them as extra
// build server flags is refused.
var joinOwnFlags = []string{"config", "metaserver", "data-dir", "ca", "insecure", "token", "enroll", "name"}

// join is `buildserver join [flags] METASERVER ENROLL_TOKEN [buildserver
// flags...]`: it exchanges the enrollment token for this build server's
// credential, saves it as DATA_DIR/token (0600, owned by the data
// directory's owner), writes the configuration file the unit reads, and
// enables and starts the service when systemd runs here (else it says what
// to run). Everything that can be checked is checked before the token is
// spent, and a token the metaserver refuses (unknown, expired, used)
// changes nothing on disk. Exit 0 joined, 1 failed after or around the
// exchange, 2 bad input or a refused token.
func join(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("buildserver join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	confPath := fs.String("config", DefaultConfigFile, "configuration file to write (the unit reads it with --config)")
	dataDir := fs.String("data-dir", DefaultDataDir, "the build server's data directory; its owner runs the service and gets the credential")
	name := fs.String("name", "", "build server name to enroll under (default: the host name)")
	ca := fs.String("ca", "", "PEM CA certificate(s) of the metaserver's TLS certificate (enables TLS)")
	insecure := fs.Bool("insecure", false, "allow plaintext to a non-loopback metaserver")
	service := fs.String("service", DefaultService, "systemd unit to enable and start")
	noEnable := fs.Bool("no-enable", false, "write the configuration only; do not enable the service")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: buildserver join [flags] METASERVER ENROLL_TOKEN [buildserver flags...]")
		fmt.Fprintln(stderr, "  e.g. buildserver join kiln.example.org:7070 TOKEN --target auto --idle-only --jobs 2")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "buildserver join: "+format+"\n", a...)
		return code
	}
	if fs.NArg() < 2 {
		fs.Usage()
		return exitUsage
	}
	metaserver, enrollToken := fs.Arg(0), strings.TrimSpace(fs.Arg(1))
	var err error
	for _, p := range []*string{confPath, dataDir, ca} {
		if *p != "" {
			if *p, err = filepath.Abs(*p); err != nil {
				return fail(exitUsage, "%v", err)
			}
		}
	}
	lines := []string{"metaserver = " + metaserver, "data-dir = " + *dataDir}
	if *ca != "" {
		lines = append(lines, "ca = "+*ca)
	}
	if *insecure {
		lines = append(lines, "insecure")
	}
	extra, err := settingLines(fs.Args()[2:])
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	lines = append(lines, extra...)
	if err := validateSettings(lines, enrollToken); err != nil {
		return fail(exitUsage, "%v; nothing was written", err)
	}
	owner, err := preflight(*confPath, *dataDir)
	if err != nil {
		return fail(exitUsage, "%v; nothing was written", err)
	}
	enrollName, err := serverName(*name)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}

	transport, _, err := auth.ClientTLS{CAFile: *ca, Insecure: *insecure}.DialCredentials(metaserver)
	if err != nil {
		return fail(exitUsage, "%v; nothing was written", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token, enrolled, err := exchangeEnrollToken(ctx, metaserver, transport, enrollToken, enrollName)
	if err != nil {
		return fail(exitAuth, "the metaserver at %s refused: %v; nothing was written", metaserver, err)
	}

	if err := saveToken(*dataDir, token, owner); err != nil {
		return fail(exitFailure, "enrolled as %s but could not save the credential: %v (ask the operator to revoke %s, then join with a new token)", enrolled, err, enrolled)
	}
	if err := writeConfigFile(*confPath, enrolled, lines); err != nil {
		return fail(exitFailure, "enrolled as %s, credential saved in %s, but the configuration could not be written: %v", enrolled, *dataDir, err)
	}
	fmt.Fprintf(stdout, "joined %s as %s: credential in %s, configuration in %s\n", metaserver, enrolled, filepath.Join(*dataDir, "token"), *confPath)
	if *noEnable {
		fmt.Fprintf(stdout, "start it with: systemctl enable --now %s (or: buildserver --config %s)\n", *service, *confPath)
		return 0
	}
	return enableService(*service, *confPath, stdout, stderr)
}

// settingLines turns build server flags given after the token into
// configuration lines ("name = value", or "name" for a boolean), refusing
// unknown flags, stray arguments and the flags join writes itself.
func settingLines(args []string) ([]string, error) {
	var c Config
	fs := newFlagSet(&c)
	var lines []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("unexpected argument %q: build server flags follow the token", a)
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		switch {
		case f == nil:
			return nil, fmt.Errorf("unknown build server flag %s", a)
		case slices.Contains(joinOwnFlags, name):
			return nil, fmt.Errorf("--%s is join's own: give it before METASERVER", name)
		}
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() && !hasValue {
			lines = append(lines, name)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("flag %s needs a value", a)
			}
			i++
			value = args[i]
		}
		if strings.ContainsAny(value, "\r\n") {
			return nil, fmt.Errorf("flag %s: a value cannot span lines", a)
		}
		lines = append(lines, name+" = "+value)
	}
	return lines, nil
}

// validateSettings checks the lines as the build server will read them,
// with the enrollment token standing in for the credential.
func validateSettings(lines []string, enrollToken string) error {
	if enrollToken == "" || strings.ContainsAny(enrollToken, " \t") {
		return errors.New("the enrollment token is empty or contains white space")
	}
	c := defaultConfig()
	fs := newFlagSet(&c)
	for _, l := range lines {
		// Each line is one setting: a value with a line break in it
		// (join's own: --data-dir, --ca, METASERVER) would add another.
		if strings.ContainsAny(l, "\r\n") {
			return fmt.Errorf("%q: a value cannot span lines", l)
		}
		name, value, hasValue := strings.Cut(l, " = ")
		if !hasValue {
			value = "true"
		}
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
	}
	c.Enroll = enrollToken
	return c.Validate()
}

// fileOwner is who gets the credential: the data directory's owner.
type fileOwner struct{ uid, gid int }

// preflight checks, without changing anything, that join can write what
// it must: no earlier join here, and writable places for the
// configuration file and the data directory. It returns the data
// directory's owner (this process's user when it does not exist yet).
func preflight(confPath, dataDir string) (fileOwner, error) {
	owner := fileOwner{os.Geteuid(), os.Getegid()}
	if _, err := os.Lstat(confPath); err == nil {
		return owner, fmt.Errorf("%s exists: this machine has joined already (remove it and %s to join again)", confPath, filepath.Join(dataDir, "token"))
	}
	if _, err := os.Lstat(filepath.Join(dataDir, "token")); err == nil {
		return owner, fmt.Errorf("%s exists: this machine has a credential already (remove it to join again)", filepath.Join(dataDir, "token"))
	}
	fi, err := os.Stat(dataDir)
	switch {
	case err == nil && !fi.IsDir():
		return owner, fmt.Errorf("--data-dir %s is not a directory", dataDir)
	case err == nil:
		st := fi.Sys().(*syscall.Stat_t)
		owner = fileOwner{int(st.Uid), int(st.Gid)}
		if err := writable(dataDir); err != nil {
			return owner, err
		}
	default:
		if err := writable(existingAncestor(dataDir)); err != nil {
			return owner, err
		}
	}
	return owner, writable(existingAncestor(filepath.Dir(confPath)))
}

// existingAncestor is p or its nearest ancestor that exists.
func existingAncestor(p string) string {
	for {
		if _, err := os.Stat(p); err == nil || p == "/" {
			return p
		}
		p = filepath.Dir(p)
	}
}

// writable says why this process cannot create files in dir, if it cannot.
func writable(dir string) error {
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("cannot write in %s: %w (run join as root, or choose --config and --data-dir you own)", dir, err)
	}
	return nil
}

// saveToken writes DATA_DIR/token (0600, owned by owner) through a
// temporary file, fsynced and renamed, so it is whole or absent.
func saveToken(dataDir, token string, owner fileOwner) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dataDir, "token"), []byte(token+"\n"), 0o600, &owner)
}

// writeConfigFile writes the configuration file (0644: it holds no secret;
// owned by this user, so only root, or this user, may change it).
func writeConfigFile(path, enrolled string, lines []string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var b strings.Builder
	// Quoted: the name is the metaserver's answer, and a line break in
	// it must not start a setting.
	fmt.Fprintf(&b, "# Written by `buildserver join` on %s for build server %q.\n", time.Now().UTC().Format(time.RFC3339), enrolled)
	b.WriteString("# One build server flag per line (buildserver --help): \"name = value\", or\n")
	b.WriteString("# \"name\" alone for a yes/no flag. The credential is DATA_DIR/token. Only\n")
	b.WriteString("# its owner may write this file, or the build server refuses to start.\n")
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return writeFileAtomic(path, []byte(b.String()), 0o644, nil)
}

// writeFileAtomic writes data to a temporary file beside path with mode
// (and owner, when given), fsyncs it and renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode, owner *fileOwner) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename: no such file
	err = tmp.Chmod(mode)
	if err == nil && owner != nil && (owner.uid != os.Geteuid() || owner.gid != os.Getegid()) {
		err = tmp.Chown(owner.uid, owner.gid)
	}
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return err
}

// enableService enables and starts the unit when systemd runs this
// machine; otherwise it says what to run.
func enableService(service, confPath string, stdout, stderr io.Writer) int {
	systemctl, err := exec.LookPath("systemctl")
	if _, serr := os.Stat("/run/systemd/system"); err != nil || serr != nil {
		fmt.Fprintf(stdout, "systemd does not run this machine: start the build server with\n  buildserver --config %s\n(as the owner of its data directory), or enable %s where systemd runs\n", confPath, service)
		return 0
	}
	cmd := exec.Command(systemctl, "enable", "--now", service)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(stderr, "buildserver join: joined, but systemctl enable --now %s failed: %v\n", service, err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s enabled and started: journalctl -u %s follows it\n", service, service)
	return 0
}
