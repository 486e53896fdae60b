package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// DefaultConfigFile is where `buildserver join` writes the configuration
// and where the packaged systemd unit reads it (--config).
const DefaultConfigFile = "/etc/kiln/buildserver.conf"

// A configuration file holds the build server's flags, one per line, as
//
//	# a comment
//	metaserver = kiln.example.org:7070
//	target = auto
//	target = cross:s390x-linux-gnu
//	idle-only
//
// A name alone sets a boolean flag; a repeatable flag takes several lines.
// It sits between the command line and the environment: a flag given on
// the command line wins over the file, the file over KILN_* variables.
// It holds no secret (the credential is DATA_DIR/token; token and enroll
// lines are refused: builds see the file), but it decides
// where the build server connects and how builds are isolated, so only its
// owner may write it: a file that another user could change is refused
// (checkConfigPerm).

// applyConfigFile sets, from the configuration file at path, every flag of
// fs that the command line did not give. Unknown names, --config inside
// the file, and bad values are errors naming the line.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	data, err := readConfigFile(path)
	if err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, hasValue := strings.Cut(line, "=")
		name = strings.TrimPrefix(strings.TrimSpace(name), "--")
		value = strings.TrimSpace(value)
		f := fs.Lookup(name)
		switch {
		case f == nil:
			return fmt.Errorf("%s:%d: unknown setting %q", path, n, name)
		case name == "config":
			return fmt.Errorf("%s:%d: a configuration file cannot name another", path, n)
		case name == "token" || name == "enroll":
			// The file is readable by others, builds included (their
			// sandbox sees / read-only but for the data directory).
			return fmt.Errorf("%s:%d: a credential does not go in the configuration file, which builds can read: it is DATA_DIR/token (or KILN_TOKEN)", path, n)
		case given[name]:
			continue
		}
		if !hasValue {
			if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !bf.IsBoolFlag() {
				return fmt.Errorf("%s:%d: %s needs a value (%s = ...)", path, n, name, name)
			}
			value = "true"
		}
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", path, n, name, err)
		}
	}
	return sc.Err()
}

// readConfigFile reads the configuration file after checkConfigPerm.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkConfigPerm(path, fi, os.Geteuid()); err != nil {
		return nil, err
	}
	return readAllLimited(f, 1<<20)
}

// ErrConfigPerm is wrapped when the configuration file could be changed by
// someone other than root or the build server's own user.
var ErrConfigPerm = errors.New("configuration file is not protected")

// checkConfigPerm refuses a configuration file that is not a regular file,
// that is owned by a user other than root and euid, or that its group or
// others may write: whoever could change it could point the build server
// at another metaserver or turn its sandbox off.
func checkConfigPerm(path string, fi fs.FileInfo, euid int) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrConfigPerm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != euid {
		return fmt.Errorf("%w: %s belongs to uid %d, neither root nor this build server's user (uid %d): chown root %s",
			ErrConfigPerm, path, st.Uid, euid, path)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s is writable by its group or others (mode %#o): chmod go-w %s", ErrConfigPerm, path, perm, path)
	}
	return nil
}

// readAllLimited reads f, refusing more than limit bytes.
func readAllLimited(f *os.File, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", f.Name(), limit)
	}
	return data, nil
}
