package compilecli

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/platform"
)

// defaultDialTimeout bounds connecting to the metaserver.
const defaultDialTimeout = 5 * time.Second

// listFlag is a repeatable string flag.
type listFlag struct{ p *[]string }

func (l listFlag) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, " ")
}
func (l listFlag) Set(s string) error { *l.p = append(*l.p, s); return nil }

// platformFlag sets one field of a platform override map.
type platformFlag struct {
	m     *map[string]string
	field string
}

func (p platformFlag) String() string {
	if p.m == nil || *p.m == nil {
		return ""
	}
	return (*p.m)[p.field]
}

func (p platformFlag) Set(s string) error {
	if _, err := platform.Canonical(p.field, s); err != nil {
		return err
	}
	if *p.m == nil {
		*p.m = map[string]string{}
	}
	(*p.m)[p.field] = s
	return nil
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func bindConnection(fs *flag.FlagSet, c *Connection, getenv func(string) string) {
	def := DefaultMetaserver
	if v := getenv(EnvMetaserver); v != "" {
		def = v
	}
	fs.StringVar(&c.Metaserver, "metaserver", def, "metaserver gRPC address host:port, or several separated by commas to follow the live one (env "+EnvMetaserver+")")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", defaultDialTimeout, "how long to try connecting to the metaserver")
	fs.StringVar(&c.CA, "ca", "", "PEM CA certificate(s) of the metaserver's TLS certificate (enables TLS)")
	fs.BoolVar(&c.Insecure, "insecure", false, "allow plaintext to a metaserver that is not on loopback")
}

// SubmitFlags returns the flag set of the submit command bound to o.
func SubmitFlags(o *SubmitOptions, getenv func(string) string) *flag.FlagSet {
	fs := newFlagSet("startcompile")
	bindConnection(fs, &o.Connection, getenv)
	fs.StringVar(&o.Project, "project", "", "registered project to build (required unless --pin)")
	fs.StringVar(&o.Revision, "revision", "", "commit, tag, branch or range A..B (default: the default branch's head)")
	fs.Var(listFlag{&o.Options}, "o", "compile option name=value (repeatable)")
	for _, pf := range platform.Registry {
		if pf.Flag == "" {
			continue
		}
		def := "any"
		if pf.DefaultPinned {
			def = "this machine's"
		}
		fs.Var(platformFlag{&o.Platform, pf.Name}, pf.Flag, fmt.Sprintf("pin %s (default: %s; \"any\" frees it)", pf.Name, def))
	}
	fs.BoolVar(&o.Wait, "wait", false, "follow the build to the end, showing progress and the log on stderr")
	fs.StringVar(&o.Download, "download", "", "unpack the artifact into `DIR` (implies --wait)")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object on stdout at the end")
	fs.StringVar(&o.Pin, "pin", "", "with --download: fetch the artifact pinned under `NAME`, no build")
	fs.DurationVar(&o.Timeout, "timeout", 0, "give up waiting after this long (0: no limit)")
	o.Mail = "each"
	fs.Var(mailFlag{&o.Mail}, "mail", "mail the result: each (when the build ends) or none")
	fs.StringVar(&o.Accept, "accept", AcceptVerified, "verified: wait until build servers of enough different operators agree on the artifact; unverified: take the first result, on one volunteer's word")
	return fs
}

// CheckFlags returns the flag set of the check command bound to o.
func CheckFlags(o *CheckOptions, getenv func(string) string) *flag.FlagSet {
	fs := newFlagSet("startcompile check")
	bindConnection(fs, &o.Connection, getenv)
	fs.StringVar(&o.Project, "project", "", "registered project to build (required)")
	fs.StringVar(&o.Revision, "revision", "", "commit, tag, branch or range A..B (default: the default branch's head)")
	fs.Var(listFlag{&o.Options}, "o", "compile option name=value (repeatable)")
	o.Mail = "summary"
	fs.Var(mailFlag{&o.Mail}, "mail", "mail: summary (one mail when the last build ends, every build listed), each (one per build) or none")
	fs.Var(listFlag{&o.Platforms}, "platform", "platform as field=value,... e.g. arch=s390x,endian=big (repeatable; default: every connected platform)")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object on stdout at the end")
	fs.DurationVar(&o.Timeout, "timeout", 0, "give up waiting after this long (0: no limit)")
	return fs
}

// StatusFlags returns the flag set of the status command bound to o.
func StatusFlags(o *StatusOptions, getenv func(string) string) *flag.FlagSet {
	fs := newFlagSet("startcompile status")
	bindConnection(fs, &o.Connection, getenv)
	fs.BoolVar(&o.Wait, "wait", false, "follow the build to the end")
	fs.StringVar(&o.Download, "download", "", "unpack the artifact into `DIR` (implies --wait)")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object on stdout at the end")
	fs.DurationVar(&o.Timeout, "timeout", 0, "give up waiting after this long (0: no limit)")
	fs.StringVar(&o.Accept, "accept", AcceptVerified, "verified: wait for a verified artifact; unverified: take (and download) the first result")
	return fs
}

// CancelFlags returns the flag set of the cancel command bound to o.
func CancelFlags(o *CancelOptions, getenv func(string) string) *flag.FlagSet {
	fs := newFlagSet("startcompile cancel")
	bindConnection(fs, &o.Connection, getenv)
	fs.StringVar(&o.Email, "email", "", "the email address you asked for the build with; only your own wait is withdrawn (required)")
	return fs
}

// LogFlags returns the flag set of the log command bound to o.
func LogFlags(o *LogOptions, getenv func(string) string) *flag.FlagSet {
	fs := newFlagSet("startcompile log")
	bindConnection(fs, &o.Connection, getenv)
	fs.BoolVar(&o.Follow, "follow", false, "keep printing until the build is final")
	fs.BoolVar(&o.Follow, "f", false, "short for --follow")
	return fs
}

// parseInterspersed parses args with fs, allowing flags after positional
// arguments, and returns the positional arguments. "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return nil, err
			}
			return nil, usageError("%v", err)
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usage writes fs's synopsis and flags to w.
func usage(w io.Writer, synopsis string, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\nflags:\n", synopsis)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}
