package main

import (
	"errors"
	"flag"
	"fmt"
	"github.com/kilnbuild/kiln/internal/config"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/sysinfo"
	"github.com/kilnbuild/kiln/internal/worker"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Config is everything buildserver needs to run. Each field has exactly one
// command-line flag, named in its `flag` tag (the completeness test checks
// the mapping both ways).
type Config struct {
	// ConfigFile is a file of further flags, one per line (conffile.go):
	// the command line wins over it, it wins over the environment. It must
	// be writable by its owner only, root or this user.
	ConfigFile string `flag:"config"`
	// Metaserver is the host:port of the metaserver's gRPC endpoint. Env
	// fallback KILN_METASERVER.
	Metaserver string `flag:"metaserver"`
	// Token is this build server's credential, issued by the metaserver's
	// admin. Env fallback KILN_TOKEN, then the file DATA_DIR/token (both
	// keep it out of the process list, unlike the flag).
	Token string `flag:"token"`
	// Enroll is a single-use enrollment token from the metaserver's operator
	// (metaserver enroll-token create): exchanged once at start for this
	// build server's own credential, saved as DATA_DIR/token (mode 0600).
	Enroll string `flag:"enroll"`
	// Name is the build server's name when enrolling (default: the host name).
	Name string `flag:"name"`
	// CA is a PEM file of the private CA that signed the metaserver's TLS
	// certificate; with it the connection uses TLS.
	CA string `flag:"ca"`
	// Insecure allows a plaintext connection to a non-loopback metaserver.
	Insecure bool `flag:"insecure"`
	// DataDir holds the source mirrors, build directories and results not
	// yet acknowledged; builds cannot see it. Env fallback KILN_DATA_DIR.
	DataDir string `flag:"data-dir"`
	// Jobs is how many builds run at once across all targets.
	Jobs int `flag:"jobs"`
	// Targets are the ways this machine builds: native, musl or
	// cross:TRIPLE (repeatable). Each is probed at start; one whose probe
	// fails is not offered.
	Targets []string `flag:"target"`
	// Labels are free-form labels shown with every target (repeatable).
	Labels []string `flag:"label"`
	// AllowProjects, if given, are the only projects built here (repeatable).
	AllowProjects []string `flag:"allow-project"`
	// AllowOptions limit compile options, each "name=v1,v2" (repeatable; the
	// same name twice adds values). A build with another value is refused.
	AllowOptions []string `flag:"allow-option"`
	// MaxBuildTime refuses builds whose time limit is longer, and bounds
	// builds that declare none; 0 means no cap of the volunteer's own.
	// Whole seconds.
	MaxBuildTime time.Duration `flag:"max-build-time"`
	// IdleOnly takes new builds only while the machine is otherwise idle
	// (load average below half the CPUs).
	IdleOnly bool `flag:"idle-only"`
	// Sandbox is how steps are isolated: "bwrap" (bubblewrap: no network,
	// read-only system, hidden home and data directory) or "none" (steps run
	// as this user with full access; announced publicly).
	Sandbox string `flag:"sandbox"`
	// BuildUID is the first of --jobs uids (and gids) whose users run the
	// builds when the build server is root: each running build gets one of
	// its own. Ignored when not root (steps then run as this user).
	BuildUID uint `flag:"build-uid"`
	// MaxLogBytes caps one build's log; output past it is dropped with a notice.
	MaxLogBytes int64 `flag:"max-log-bytes"`
	// MaxFileSize caps any file a build step writes (RLIMIT_FSIZE), bytes.
	MaxFileSize uint64 `flag:"max-file-size"`
	// MaxProcesses caps the processes of one build step.
	MaxProcesses uint64 `flag:"max-processes"`
	// MaxArtifactBytes caps one packed artifact.
	MaxArtifactBytes int64 `flag:"max-artifact-bytes"`
	// MaxDiskBytes caps what one build holds on disk (its source, install
	// and home directories, and its artifact); a build over it is stopped
	// and fails. 0 means no cap.
	MaxDiskBytes int64 `flag:"max-disk-bytes"`
	// MinFreeDiskBytes is the space the data directory's file system keeps
	// free: a running build step that finds less is stopped and handed
	// back to be built elsewhere. 0 means no reserve.
	MinFreeDiskBytes int64 `flag:"min-free-disk-bytes"`
	// CompilerCacheBytes bounds each compiler cache (ccache, one per
	// project and target, under DATA_DIR/ccache; kept only when ccache is
	// installed and steps run under bubblewrap); at most a quarter of
	// --max-disk-bytes. 0 means no compiler cache.
	CompilerCacheBytes int64 `flag:"compiler-cache-bytes"`
	// MirrorBytes bounds the disk the source mirrors and the compiler
	// caches take together (DATA_DIR/mirrors and DATA_DIR/ccache): after
	// builds, the least recently built projects' mirrors are wiped, each
	// with its compiler caches, until they fit. 0 means no bound.
	MirrorBytes int64 `flag:"mirror-bytes"`
	// Grace is how long SIGTERM lets running builds finish before they are
	// cancelled and handed back to the metaserver.
	Grace time.Duration `flag:"grace"`
	// LogFormat is the format of the build server's own log on stderr: text or json.
	LogFormat string `flag:"log-format"`
	// LogLevel is the least severe log level written: debug, info, warn or
	// error. Env fallback KILN_LOG_LEVEL.
	LogLevel string `flag:"log-level"`
}

// DefaultBuildUID is --build-uid's default: far above the uids of
// accounts and of the subordinate ranges (/etc/subuid) that container
// tools allocate, so that no file on the machine is a build's own.
const DefaultBuildUID = 1700000000

// defaultConfig is the configuration before flags and environment.
func defaultConfig() Config {
	return Config{
		Metaserver: "127.0.0.1:7070",
		Jobs:       1,
		Sandbox:    "bwrap",
		BuildUID:   DefaultBuildUID,
		Grace:      30 * time.Second,
		LogFormat:  "text",

		MaxDiskBytes:       worker.DefaultMaxDiskBytes,
		MinFreeDiskBytes:   worker.DefaultMinFreeDiskBytes,
		CompilerCacheBytes: worker.DefaultCompilerCacheBytes,
		MirrorBytes:        worker.DefaultMirrorBytes,
		LogLevel:           "info",
	}
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid configuration")

// maxJobs bounds --jobs to what the metaserver accepts.
const maxJobs = 1024

// Validate checks the configuration before anything starts and reports
// every problem at once.
func (c Config) Validate() error {
	var errs []error
	if _, err := auth.SplitMetaservers(c.Metaserver); err != nil {
		errs = append(errs, fmt.Errorf("--metaserver %q: want host:port, or several separated by commas", c.Metaserver))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	switch {
	case c.Token == "" && c.Enroll == "":
		errs = append(errs, errors.New("no token: give --token, set KILN_TOKEN, write it to DATA_DIR/token, or join with --enroll"))
	case strings.ContainsAny(c.Token, " \t\r\n"):
		errs = append(errs, errors.New("the token contains white space"))
	}
	if c.Jobs < 1 || c.Jobs > maxJobs {
		errs = append(errs, fmt.Errorf("--jobs must be 1..%d, got %d", maxJobs, c.Jobs))
	}
	if _, err := c.targetSpecs(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.allowedOptions(); err != nil {
		errs = append(errs, err)
	}
	for _, l := range c.Labels {
		if l == "" || len(l) > 64 {
			errs = append(errs, fmt.Errorf("--label %q: want 1 to 64 bytes", l))
		}
	}
	for _, p := range c.AllowProjects {
		if p == "" {
			errs = append(errs, errors.New("--allow-project must not be empty"))
		}
	}
	switch {
	case c.MaxBuildTime < 0:
		errs = append(errs, fmt.Errorf("--max-build-time must not be negative, got %s", c.MaxBuildTime))
	case c.MaxBuildTime%time.Second != 0:
		errs = append(errs, fmt.Errorf("--max-build-time must be whole seconds, got %s", c.MaxBuildTime))
	case c.MaxBuildTime/time.Second > 1<<32-1:
		errs = append(errs, fmt.Errorf("--max-build-time %s is too long", c.MaxBuildTime))
	}
	if c.BuildUID == 0 || c.BuildUID+uint(max(c.Jobs, 1)) > 1<<31 {
		errs = append(errs, fmt.Errorf("--build-uid %d: want 1 to 2^31-1-jobs", c.BuildUID))
	}
	if c.Sandbox != "bwrap" && c.Sandbox != "none" {
		errs = append(errs, fmt.Errorf("--sandbox %q: want bwrap or none", c.Sandbox))
	}
	for _, v := range []struct {
		flag string
		n    int64
	}{{"max-log-bytes", c.MaxLogBytes}, {"max-artifact-bytes", c.MaxArtifactBytes},
		{"max-disk-bytes", c.MaxDiskBytes}, {"min-free-disk-bytes", c.MinFreeDiskBytes},
		{"compiler-cache-bytes", c.CompilerCacheBytes}, {"mirror-bytes", c.MirrorBytes}} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("--%s must not be negative, got %d", v.flag, v.n))
		}
	}
	if c.Grace < 0 {
		errs = append(errs, fmt.Errorf("--grace must not be negative, got %s", c.Grace))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}

// targetSpecs parses --target values ("native" when none is given).
func (c Config) targetSpecs() ([]sysinfo.TargetSpec, error) {
	names := c.Targets
	if len(names) == 0 {
		names = []string{"native"}
	}
	var specs []sysinfo.TargetSpec
	for _, n := range names {
		if n == "auto" {
			found, _ := sysinfo.Discover()
			for _, f := range found {
				if !slices.ContainsFunc(specs, func(s sysinfo.TargetSpec) bool { return s.ID == f.ID }) {
					specs = append(specs, f)
				}
			}
			continue
		}
		spec, err := sysinfo.ParseTarget(n)
		if err != nil {
			return nil, fmt.Errorf("--target: %w", err)
		}
		if slices.ContainsFunc(specs, func(s sysinfo.TargetSpec) bool { return s.ID == spec.ID }) {
			return nil, fmt.Errorf("--target %s given twice", n)
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

// allowedOptions parses --allow-option values into the policy's map.
func (c Config) allowedOptions() (map[string]*kilnv1.OptionValues, error) {
	out := map[string]*kilnv1.OptionValues{}
	for _, spec := range c.AllowOptions {
		name, list, ok := strings.Cut(spec, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || list == "" {
			return nil, fmt.Errorf("--allow-option %q: want name=value1,value2", spec)
		}
		ov := out[name]
		if ov == nil {
			ov = &kilnv1.OptionValues{}
			out[name] = ov
		}
		for _, v := range strings.Split(list, ",") {
			if !slices.Contains(ov.Values, v) {
				ov.Values = append(ov.Values, v)
			}
		}
		sort.Strings(ov.Values)
	}
	return out, nil
}

// policy is the volunteer's policy as sent to the metaserver.
func (c Config) policy() *kilnv1.BuildServerPolicy {
	opts, _ := c.allowedOptions() // validated
	return &kilnv1.BuildServerPolicy{
		AllowedProjects: c.AllowProjects,
		MaxBuildSeconds: uint32(c.MaxBuildTime / time.Second),
		AllowedOptions:  opts,
		IdleOnly:        c.IdleOnly,
	}
}

// parseLevel maps --log-level to a slog level.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// stringList is a repeatable string flag.
type stringList struct{ list *[]string }

func (s stringList) String() string {
	if s.list == nil {
		return ""
	}
	return strings.Join(*s.list, ",")
}

func (s stringList) Set(v string) error {
	*s.list = append(*s.list, v)
	return nil
}

// envFallbacks names the environment variable read when a flag is not given.
var envFallbacks = map[string]string{
	"metaserver": "KILN_METASERVER",
	"token":      "KILN_TOKEN",
	"data-dir":   "KILN_DATA_DIR",
	"log-level":  "KILN_LOG_LEVEL",
}

// newFlagSet binds every Config field to its flag.
func newFlagSet(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("buildserver", flag.ContinueOnError)
	fs.StringVar(&c.ConfigFile, "config", c.ConfigFile, "file of further flags, one \"name = value\" per line (buildserver join writes "+DefaultConfigFile+"); writable by its owner only")
	fs.StringVar(&c.Metaserver, "metaserver", c.Metaserver, "metaserver gRPC address host:port, or several separated by commas to follow the live one (env KILN_METASERVER)")
	fs.StringVar(&c.Token, "token", c.Token, "build server credential (env KILN_TOKEN, else the file DATA_DIR/token; both keep it out of ps)")
	fs.StringVar(&c.Enroll, "enroll", c.Enroll, "enrollment token, exchanged once for this build server's credential (saved as DATA_DIR/token)")
	fs.StringVar(&c.Name, "name", c.Name, "build server name when enrolling (default: host name)")
	fs.StringVar(&c.CA, "ca", c.CA, "PEM CA certificate(s) of the metaserver's TLS certificate (enables TLS)")
	fs.BoolVar(&c.Insecure, "insecure", c.Insecure, "allow plaintext to a non-loopback metaserver")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for mirrors, builds and pending results (env KILN_DATA_DIR)")
	fs.IntVar(&c.Jobs, "jobs", c.Jobs, "builds run at once across all targets")
	fs.Var(stringList{&c.Targets}, "target", "target to offer: native, musl, cross:TRIPLE, or auto: every toolchain installed here whose programs run (repeatable; default native)")
	fs.Var(stringList{&c.Labels}, "label", "free-form label shown with every target (repeatable)")
	fs.Var(stringList{&c.AllowProjects}, "allow-project", "build only this project (repeatable; default any)")
	fs.Var(stringList{&c.AllowOptions}, "allow-option", "allow only these values of an option, name=v1,v2 (repeatable)")
	fs.DurationVar(&c.MaxBuildTime, "max-build-time", c.MaxBuildTime, "refuse builds allowed to run longer than this, whole seconds (0: no cap)")
	fs.BoolVar(&c.IdleOnly, "idle-only", c.IdleOnly, "take new builds only while the machine is otherwise idle")
	fs.StringVar(&c.Sandbox, "sandbox", c.Sandbox, "step isolation: bwrap, or none (unsafe: builds run as this user; announced publicly; refused as root)")
	fs.UintVar(&c.BuildUID, "build-uid", c.BuildUID, "as root: builds run as uids (and gids) from this one on, one per --jobs, which no account may have")
	fs.Int64Var(&c.MaxLogBytes, "max-log-bytes", c.MaxLogBytes, "cap on one build's log in bytes (0: 16 MiB)")
	fs.Uint64Var(&c.MaxFileSize, "max-file-size", c.MaxFileSize, "cap on any file a build step writes, bytes (0: 1 GiB)")
	fs.Uint64Var(&c.MaxProcesses, "max-processes", c.MaxProcesses, "cap on the processes of one build step (0: 512)")
	fs.Int64Var(&c.MaxArtifactBytes, "max-artifact-bytes", c.MaxArtifactBytes, "cap on one packed artifact in bytes (0: 1 GiB)")
	fs.Int64Var(&c.MirrorBytes, "mirror-bytes", c.MirrorBytes, "bound of the disk the source mirrors and the compiler caches take together, bytes: after builds, the least recently built projects' mirrors are wiped with their compiler caches until they fit (0: no bound)")
	fs.Int64Var(&c.CompilerCacheBytes, "compiler-cache-bytes", c.CompilerCacheBytes, "bound of each compiler cache (ccache, one per project and target, when ccache is installed and steps run under bubblewrap), bytes; at most a quarter of --max-disk-bytes (0: no compiler cache)")
	fs.Int64Var(&c.MaxDiskBytes, "max-disk-bytes", c.MaxDiskBytes, "cap on what one build holds on disk (sources, install tree, home, artifact), bytes; a build over it is stopped (0: no cap)")
	fs.Int64Var(&c.MinFreeDiskBytes, "min-free-disk-bytes", c.MinFreeDiskBytes, "space kept free on the data directory's file system; a build step finding less is stopped and handed back (0: no reserve)")
	fs.DurationVar(&c.Grace, "grace", c.Grace, "on SIGTERM, how long running builds may finish before they are handed back")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "format of the build server's own log on stderr: text or json")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log level: debug, info, warn or error (env KILN_LOG_LEVEL)")
	return fs
}

// parseConfig reads flags, fills flags not given from the environment
// (flag > environment > default), reads DATA_DIR/token when no token was
// given, and validates.
func parseConfig(args []string, getenv func(string) string) (Config, error) {
	c := defaultConfig()
	fs := newFlagSet(&c)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected arguments %s", ErrConfig, strings.Join(fs.Args(), " "))
	}
	if c.ConfigFile != "" {
		if err := applyConfigFile(fs, c.ConfigFile); err != nil {
			return c, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if err := config.ApplyEnv(fs, envFallbacks, getenv); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	// The probe and git run in other directories: paths must not move.
	if err := config.AbsPaths(fs, "data-dir", "ca"); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.Token == "" && c.DataDir != "" {
		data, err := os.ReadFile(filepath.Join(c.DataDir, "token"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return c, fmt.Errorf("%w: reading the token file: %w", ErrConfig, err)
		}
		c.Token = strings.TrimSpace(string(data))
	}
	return c, c.Validate()
}
