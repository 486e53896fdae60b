package main

import (
	"errors"
	"flag"
	"fmt"
	"github.com/kilnbuild/kiln/internal/auth"
	"github.com/kilnbuild/kiln/internal/config"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"
)

// Config is everything webstatus needs to run. Each field has exactly one
// command-line flag, named in its `flag` tag (the completeness test checks
// the mapping both ways).
type Config struct {
	// Metaserver is the host:port of the metaserver's gRPC endpoint
	// (StatusService and CompileService). Env fallback KILN_METASERVER.
	Metaserver string `flag:"metaserver"`
	// Listen is the host:port the web pages are served on. Loopback by
	// default: put a reverse proxy in front to publish it. Env fallback
	// KILN_WEBSTATUS_LISTEN.
	Listen string `flag:"listen"`
	// RPCTimeout bounds each unary metaserver call a page makes, so a hung
	// metaserver yields a 503 page rather than a hung browser.
	RPCTimeout time.Duration `flag:"rpc-timeout"`
	// ShutdownTimeout is how long a SIGTERM waits for requests in flight
	// (downloads included) before closing connections.
	ShutdownTimeout time.Duration `flag:"shutdown-timeout"`
	// PageSize is the number of builds per /builds page (1..500; 0 lets the
	// metaserver choose, 50).
	PageSize uint `flag:"page-size"`
	// CA is a PEM file of the private CA that signed the metaserver's TLS
	// certificate; with it the connection uses TLS.
	CA string `flag:"ca"`
	// Insecure allows plaintext to a metaserver that is not on loopback.
	Insecure bool `flag:"insecure"`
	// LogLevel is the least severe server log level written: debug, info,
	// warn or error. Env fallback KILN_LOG_LEVEL.
	LogLevel string `flag:"log-level"`
}

// defaultConfig is the configuration before flags and environment.
func defaultConfig() Config {
	return Config{
		Metaserver:      "127.0.0.1:7070",
		Listen:          "127.0.0.1:8080",
		RPCTimeout:      10 * time.Second,
		ShutdownTimeout: 15 * time.Second,
		LogLevel:        "info",
	}
}

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("invalid configuration")

// Validate checks the configuration before anything starts.
func (c Config) Validate() error {
	var errs []error
	if _, err := auth.SplitMetaservers(c.Metaserver); err != nil {
		errs = append(errs, fmt.Errorf("--metaserver %q: %w", c.Metaserver, err))
	}
	if _, _, err := (auth.ClientTLS{CAFile: c.CA, Insecure: c.Insecure}).DialCredentials(c.Metaserver); err != nil && c.CA == "" {
		errs = append(errs, err)
	}
	if err := checkHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: %w", c.Listen, err))
	}
	if c.RPCTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--rpc-timeout must be positive, got %s", c.RPCTimeout))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout must be positive, got %s", c.ShutdownTimeout))
	}
	if c.PageSize > 500 {
		errs = append(errs, fmt.Errorf("--page-size must be at most 500, got %d", c.PageSize))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	return nil
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if port == "" {
		return errors.New("missing port")
	}
	_ = host // empty host means all interfaces, which is allowed
	return nil
}

// parseLevel maps --log-level to a slog level.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// envFallbacks names the environment variable read when a flag is not given.
var envFallbacks = map[string]string{
	"metaserver": "KILN_METASERVER",
	"listen":     "KILN_WEBSTATUS_LISTEN",
	"log-level":  "KILN_LOG_LEVEL",
}

// newFlagSet binds every Config field to its flag.
func newFlagSet(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("webstatus", flag.ContinueOnError)
	fs.StringVar(&c.Metaserver, "metaserver", c.Metaserver, "metaserver gRPC address host:port, or several separated by commas to follow the live one (env KILN_METASERVER)")
	fs.StringVar(&c.CA, "ca", c.CA, "PEM CA certificate(s) of the metaserver's TLS certificate (enables TLS)")
	fs.BoolVar(&c.Insecure, "insecure", c.Insecure, "allow plaintext to a metaserver that is not on loopback")
	fs.StringVar(&c.Listen, "listen", c.Listen, "address to serve the web pages on, host:port (env KILN_WEBSTATUS_LISTEN)")
	fs.DurationVar(&c.RPCTimeout, "rpc-timeout", c.RPCTimeout, "bound on each metaserver call a page makes")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long SIGTERM waits for requests in flight")
	fs.UintVar(&c.PageSize, "page-size", c.PageSize, "builds per /builds page, 1..500 (0: the metaserver's default)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "server log level: debug, info, warn or error (env KILN_LOG_LEVEL)")
	return fs
}

// parseConfig reads flags, then fills flags not given from the environment
// (flag > environment > default), and validates.
func parseConfig(args []string, getenv func(string) string) (Config, error) {
	c := defaultConfig()
	fs := newFlagSet(&c)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("%w: unexpected arguments %s", ErrConfig, strings.Join(fs.Args(), " "))
	}
	if err := config.ApplyEnv(fs, envFallbacks, getenv); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := config.AbsPaths(fs, "ca"); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return c, c.Validate()
}

// defaultGetenv is os.Getenv; a variable so main stays the only caller.
var defaultGetenv = os.Getenv
