package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
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
		// Red team: the file is world-readable and so is / in every build's
		// sandbox: a credential there is any project's to take.
		{"a credential", "metaserver = 127.0.0.1:7070\ntoken = kiln_secret\n", 0o644, ":2: a credential does not go in"},
		{"an enrollment token", "enroll = kilnenroll_secret\n", 0o600, ":1: a credential does not go in"},
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

// Red team: join writes its own values (--data-dir, --ca, the metaserver
// address) as configuration lines: a value holding a newline would add a
// line of its own ("sandbox = none") that the volunteer never typed as a
// flag. Refused before the token is spent; nothing is written.
func TestJoin_AValueSpanningLinesIsRefused(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "buildserver.conf")
	for _, args := range [][]string{
		{"--config", conf, "--no-enable", "--data-dir", filepath.Join(dir, "data") + "\nsandbox = none", "127.0.0.1:1", "kilnenroll_x"},
		{"--config", conf, "--no-enable", "--data-dir", filepath.Join(dir, "data"), "127.0.0.1:1\nsandbox = none", "kilnenroll_x"},
	} {
		var out, errb strings.Builder
		code := join(args, &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), "cannot span lines") {
			t.Fatalf("join %q: exit %d, stderr %q; want refused as spanning lines", args, code, errb.String())
		}
		if _, err := os.Stat(conf); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("configuration written: %v", err)
		}
	}
}

// hostileEnroller answers every enrollment with a name of its choosing.
type hostileEnroller struct {
	kilnv1.UnimplementedEnrollServiceServer
	name string
}

func (h hostileEnroller) Enroll(context.Context, *kilnv1.EnrollRequest) (*kilnv1.EnrollResponse, error) {
	return &kilnv1.EnrollResponse{Name: h.name, Token: "kiln_x"}, nil
}

// Red team: the name the metaserver answers goes into the configuration
// file's first comment; a name with a line break must not add a setting
// (a metaserver, or whoever answers in its place, turning the sandbox off).
func TestJoin_TheEnrolledNameCannotAddASetting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	kilnv1.RegisterEnrollServiceServer(gs, hostileEnroller{name: "vm\nsandbox = none"})
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	dir := t.TempDir()
	conf := filepath.Join(dir, "buildserver.conf")
	var out, errb strings.Builder
	join([]string{"--config", conf, "--no-enable", "--name", "vm", "--data-dir", filepath.Join(dir, "data"), ln.Addr().String(), "kilnenroll_x"}, &out, &errb)
	data, err := os.ReadFile(conf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "sandbox") {
			t.Fatalf("the enrolled name added a setting:\n%s", data)
		}
	}
}
