package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func writeConf(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "buildserver.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseConfig_ConfigFile_SitsBetweenFlagsAndEnvironment(t *testing.T) {
	p := writeConf(t, "# joined\nmetaserver = 127.0.0.1:7171\ndata-dir = /d\ntarget = native\ntarget = musl\nidle-only\njobs = 3\n", 0o644)
	env := map[string]string{"KILN_METASERVER": "127.0.0.1:9999", "KILN_TOKEN": "envtok"}
	c, err := parseConfig([]string{"--config", p, "--jobs", "2"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.Metaserver != "127.0.0.1:7171" || c.DataDir != "/d" || !c.IdleOnly || c.Jobs != 2 ||
		!slices.Equal(c.Targets, []string{"native", "musl"}) || c.Token != "envtok" {
		t.Errorf("config %+v: want the file's metaserver, data dir, targets and idle-only, the flag's jobs, the environment's token", c)
	}
}

func TestParseConfig_ConfigFile_Refused(t *testing.T) {
	tests := []struct {
		name, text string
		mode       os.FileMode
		want       string
	}{
		{"writable by others", "metaserver = 127.0.0.1:7070\n", 0o666, "writable by its group or others"},
		{"writable by its group", "metaserver = 127.0.0.1:7070\n", 0o664, "chmod go-w"},
		{"an unknown setting", "metaserver = 127.0.0.1:7070\nsandbx = none\n", 0o644, `:2: unknown setting "sandbx"`},
		{"a value-less setting that needs one", "jobs\n", 0o644, "jobs needs a value"},
		{"a config naming another", "config = /etc/passwd\n", 0o644, "cannot name another"},
		{"a bad value", "jobs = many\n", 0o644, ":1: jobs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeConf(t, tc.text, tc.mode)
			_, err := parseConfig([]string{"--config", p, "--token", "t", "--data-dir", "/d"}, func(string) string { return "" })
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrConfig mentioning %q", err, tc.want)
			}
		})
	}
}

func TestCheckConfigPerm_AnotherUsersFile_Refused(t *testing.T) {
	p := writeConf(t, "jobs = 1\n", 0o644)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	// The file belongs to this test's user: as seen by a build server
	// running as another (non-root owner) user, it is refused.
	if os.Geteuid() == 0 {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if fi, err = os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	err = checkConfigPerm(p, fi, 4242)
	if !errors.Is(err, ErrConfigPerm) || !strings.Contains(err.Error(), "neither root nor") {
		t.Fatalf("err = %v, want ErrConfigPerm naming the owner", err)
	}
	owner := int(fi.Sys().(*syscall.Stat_t).Uid)
	if err := checkConfigPerm(p, fi, owner); err != nil {
		t.Fatalf("the owner's own 0644 file refused: %v", err)
	}
}
