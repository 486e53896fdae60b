package compilecli

import (
	"fmt"
	"github.com/kilnbuild/kiln/internal/auth"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// DefaultMetaserver is the metaserver address used when neither
// --metaserver nor KILN_METASERVER is given.
const DefaultMetaserver = "127.0.0.1:7070"

// EnvMetaserver names the environment variable that overrides
// DefaultMetaserver.
const EnvMetaserver = "KILN_METASERVER"

// Every field bound to a flag carries a `flag:"name"` tag, every positional
// argument an `arg:"name"` tag; options_test.go checks both against the flag
// sets so that no flag is left unwired.

// Connection is how every subcommand reaches the metaserver.
type Connection struct {
	// Metaserver is the host:port of the metaserver's gRPC listener.
	Metaserver string `flag:"metaserver"`
	// DialTimeout bounds connecting to the metaserver (not the RPCs), so an
	// unreachable metaserver fails fast with exit status 3.
	DialTimeout time.Duration `flag:"dial-timeout"`
	// CA is a PEM file of the private CA that signed the metaserver's TLS
	// certificate; with it the connection uses TLS.
	CA string `flag:"ca"`
	// Insecure allows plaintext to a metaserver that is not on loopback.
	Insecure bool `flag:"insecure"`
}

func (c *Connection) validate() error {
	if strings.TrimSpace(c.Metaserver) == "" {
		return usageError("--metaserver must not be empty")
	}
	if c.DialTimeout <= 0 {
		return usageError("--dial-timeout must be positive, got %s", c.DialTimeout)
	}
	if c.CA == "" && !c.Insecure && !auth.AllLoopback(c.Metaserver) {
		return usageError("refusing plaintext to %s, which is not loopback: give --ca for the metaserver's CA, or --insecure", c.Metaserver)
	}
	return nil
}

// SubmitOptions configures `startcompile [flags] EMAIL`.
type SubmitOptions struct {
	Connection
	// Project is the registered project's name. Required unless Pin is set.
	Project string `flag:"project"`
	// Revision is a commit, tag, branch or range "A..B"; empty means the
	// default branch's head.
	Revision string `flag:"revision"`
	// Options are compile options as "name=value", validated by the
	// metaserver against the project's manifest.
	Options []string `flag:"o"`
	// Platform overrides, keyed by constraint field name: one flag per
	// platform.Registry field with a Flag (the tag stands for them). An
	// absent key takes the default (measured for DefaultPinned, free
	// otherwise); "any" frees the field.
	Platform map[string]string `flag:"<platform.Registry flags>"`
	// Wait follows the build until it is final.
	Wait bool `flag:"wait"`
	// Download is a directory to unpack the artifact into; implies Wait.
	Download string `flag:"download"`
	// JSON prints one JSON object (Result) on stdout instead of text.
	JSON bool `flag:"json"`
	// Pin fetches the artifact pinned under this name instead of building;
	// requires Download.
	Pin string `flag:"pin"`
	// Timeout bounds the wait for the build (and the download); 0 waits
	// as long as it takes.
	Timeout time.Duration `flag:"timeout"`
	// Mail is how the requester is mailed: "each" (the default) or "none".
	Mail string `flag:"mail"`
	// Accept is "verified" (the default: wait for a quorum of operators
	// to agree on the artifact) or "unverified" (take the first result,
	// trusted on one volunteer's word).
	Accept string `flag:"accept"`
	// Email receives the result mail; required, even with Pin.
	Email string `arg:"email"`
}

// DefaultPinned lists the constraint fields a request pins to this machine's
// measured values unless overridden: platform.DefaultPinnedFields.
var DefaultPinned = platform.DefaultPinnedFields

// Validate checks the options without touching the network or the machine.
// It sets Wait when Download is given. Errors wrap ErrUsage.
func (o *SubmitOptions) Validate() error {
	if err := o.Connection.validate(); err != nil {
		return err
	}
	if err := validateEmail(o.Email); err != nil {
		return err
	}
	if o.Timeout < 0 {
		return usageError("--timeout must not be negative")
	}
	if _, err := parseMail(o.Mail, false); err != nil {
		return err
	}
	if err := validateAccept(o.Accept); err != nil {
		return err
	}
	if o.Pin != "" {
		if o.Download == "" {
			return usageError("--pin needs --download DIR")
		}
		if o.Project != "" || o.Revision != "" || len(o.Options) > 0 {
			return usageError("--pin fetches an existing artifact: --project, --revision and -o do not apply")
		}
	} else if strings.TrimSpace(o.Project) == "" {
		return usageError("--project is required")
	}
	if o.Download != "" {
		o.Wait = true
	}
	if _, err := parseOptions(o.Options); err != nil {
		return err
	}
	if _, err := o.Constraints(nil); err != nil {
		return err
	}
	return nil
}

// NeedsMeasure reports whether Constraints needs the local system info: some
// field of DefaultPinned has no explicit value.
func (o *SubmitOptions) NeedsMeasure() bool {
	for _, f := range DefaultPinned {
		if _, ok := o.Platform[f]; !ok && o.defaultPins(f) {
			return true
		}
	}
	return false
}

// defaultPins reports whether field f, not given explicitly, is pinned to
// this machine's value: not when it is a CPU field (platform.Field.CPU) and
// another CPU field was given. The CPU fields describe one CPU together,
// arch implying endianness and data model, so `--endian big` alone reaches
// s390x or powerpc and `--data-model ILP32 --endian little` reaches i686;
// an explicit value for them still applies.
func (o *SubmitOptions) defaultPins(f string) bool {
	if pf, _ := platform.Lookup(f); !pf.CPU {
		return true
	}
	for _, g := range platform.Registry {
		if _, ok := o.Platform[g.Name]; ok && g.CPU {
			return false
		}
	}
	return true
}

// Constraints returns the request's platform constraints: fields of
// DefaultPinned without an explicit value are pinned to local's measured
// values (left free when local is nil or did not measure them, and the CPU
// fields left free when another CPU field was given, see defaultPins), explicit
// values are canonicalized by platform.Set, and "any" frees a field.
func (o *SubmitOptions) Constraints(local *kilnv1.SystemInfo) (*kilnv1.PlatformConstraints, error) {
	c := &kilnv1.PlatformConstraints{}
	for _, f := range DefaultPinned {
		if _, ok := o.Platform[f]; !ok && o.defaultPins(f) {
			if v := platform.Value(local, f); v != "" {
				if err := platform.Set(c, f, v); err != nil {
					return nil, fmt.Errorf("measured %s %q: %w", f, v, err)
				}
			}
		}
	}
	for _, pf := range platform.Registry {
		v, ok := o.Platform[pf.Name]
		if !ok || pf.Flag == "" {
			continue
		}
		if err := platform.Set(c, pf.Name, v); err != nil {
			return nil, usageError("--%s: %v", pf.Flag, err)
		}
	}
	return c, nil
}

// CheckOptions configures `startcompile check [flags] EMAIL`.
type CheckOptions struct {
	Connection
	// Project is the registered project's name; required.
	Project string `flag:"project"`
	// Revision is built on every platform; empty means the default branch's head.
	Revision string `flag:"revision"`
	// Options are compile options as "name=value".
	Options []string `flag:"o"`
	// Platforms lists the platforms to build on, each as comma-separated
	// field=value pairs ("arch=s390x,endian=big"). Empty means every distinct
	// (os, arch, endian, data_model, libc) offered by connected build servers.
	Platforms []string `flag:"platform"`
	// JSON prints one JSON object (CheckResult) on stdout instead of the lists.
	JSON bool `flag:"json"`
	// Timeout bounds waiting for all builds; 0 waits as long as it takes.
	Timeout time.Duration `flag:"timeout"`
	// Mail is how the requester is mailed: "summary" (one mail when the
	// last build ends, the default), "each" (one per build) or "none".
	Mail string `flag:"mail"`
	// Email receives the result mails; required.
	Email string `arg:"email"`
}

// Validate checks the options; errors wrap ErrUsage.
func (o *CheckOptions) Validate() error {
	if err := o.Connection.validate(); err != nil {
		return err
	}
	if err := validateEmail(o.Email); err != nil {
		return err
	}
	if strings.TrimSpace(o.Project) == "" {
		return usageError("--project is required")
	}
	if o.Timeout < 0 {
		return usageError("--timeout must not be negative")
	}
	if _, err := parseOptions(o.Options); err != nil {
		return err
	}
	if _, err := parseMail(o.Mail, true); err != nil {
		return err
	}
	_, err := parsePlatforms(o.Platforms)
	return err
}

// StatusOptions configures `startcompile status [flags] BUILD_ID`.
type StatusOptions struct {
	Connection
	// Wait follows the build until it is final.
	Wait bool `flag:"wait"`
	// Download unpacks the artifact into this directory; implies Wait.
	Download string `flag:"download"`
	// JSON prints one JSON object (Result) on stdout instead of text.
	JSON bool `flag:"json"`
	// Timeout bounds the wait; 0 waits as long as it takes.
	Timeout time.Duration `flag:"timeout"`
	// Accept: as SubmitOptions.Accept, for waiting and downloading.
	Accept string `flag:"accept"`
	// BuildID names the build.
	BuildID uint64 `arg:"build_id"`
}

// Validate checks the options and sets Wait when Download is given.
func (o *StatusOptions) Validate() error {
	if err := o.Connection.validate(); err != nil {
		return err
	}
	if o.BuildID == 0 {
		return usageError("a BUILD_ID is required")
	}
	if o.Timeout < 0 {
		return usageError("--timeout must not be negative")
	}
	if err := validateAccept(o.Accept); err != nil {
		return err
	}
	if o.Download != "" {
		o.Wait = true
	}
	return nil
}

// CancelOptions configures `startcompile cancel --email EMAIL BUILD_ID`.
type CancelOptions struct {
	Connection
	// Email is the address the caller asked for the build with: the
	// metaserver withdraws that address's wait only, and cancels the build
	// when nobody else waits on it.
	Email string `flag:"email"`
	// BuildID names the build.
	BuildID uint64 `arg:"build_id"`
}

// Validate checks the options.
func (o *CancelOptions) Validate() error {
	if err := o.Connection.validate(); err != nil {
		return err
	}
	if err := validateEmail(o.Email); err != nil {
		return err
	}
	if o.BuildID == 0 {
		return usageError("a BUILD_ID is required")
	}
	return nil
}

// LogOptions configures `startcompile log [-f|--follow] BUILD_ID`.
type LogOptions struct {
	Connection
	// Follow keeps printing until the build is final (-f is its short name).
	Follow bool `flag:"follow,f"`
	// BuildID names the build.
	BuildID uint64 `arg:"build_id"`
}

// Validate checks the options.
func (o *LogOptions) Validate() error {
	if err := o.Connection.validate(); err != nil {
		return err
	}
	if o.BuildID == 0 {
		return usageError("a BUILD_ID is required")
	}
	return nil
}

// validateEmail checks that s is one plain address. The metaserver
// validates again; this only catches typos before any network traffic.
func validateEmail(s string) error {
	if strings.TrimSpace(s) == "" {
		return usageError("an EMAIL address is required")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s {
		return usageError("%q is not a plain email address", s)
	}
	return nil
}

// parseBuildID parses a positional BUILD_ID.
func parseBuildID(s string) (uint64, error) {
	id, err := strconv.ParseUint(strings.TrimPrefix(s, "#"), 10, 64)
	if err != nil || id == 0 {
		return 0, usageError("BUILD_ID must be a positive number, got %q", s)
	}
	return id, nil
}

// parseOptions turns "name=value" strings into a map, refusing an empty
// name and a name given twice.
func parseOptions(list []string) (map[string]string, error) {
	m := make(map[string]string, len(list))
	for _, kv := range list {
		name, value, ok := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, usageError("-o %q: want name=value", kv)
		}
		if _, dup := m[name]; dup {
			return nil, usageError("-o %s given twice", name)
		}
		m[name] = value
	}
	return m, nil
}

// parsePlatforms parses --platform values ("arch=s390x,endian=big") into
// constraints. Field names may use dashes or underscores.
func parsePlatforms(list []string) ([]*kilnv1.PlatformConstraints, error) {
	var out []*kilnv1.PlatformConstraints
	for _, spec := range list {
		c := &kilnv1.PlatformConstraints{}
		for _, kv := range strings.Split(spec, ",") {
			kv = strings.TrimSpace(kv)
			if kv == "" {
				continue
			}
			field, value, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, usageError("--platform %q: want field=value pairs separated by commas", spec)
			}
			if err := platform.Set(c, platform.FieldName(strings.TrimSpace(field)), value); err != nil {
				return nil, usageError("--platform %q: %v", spec, err)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// validateAccept checks an --accept value ("" stands for verified).
func validateAccept(v string) error {
	if v != "" && v != AcceptVerified && v != AcceptUnverified {
		return usageError("--accept must be %s or %s, not %q", AcceptVerified, AcceptUnverified, v)
	}
	return nil
}

// The values of --accept.
const (
	AcceptVerified   = "verified"
	AcceptUnverified = "unverified"
)
