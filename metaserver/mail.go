package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/kilnbuild/kiln/internal/mail"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// mailConfig configures notifications: mail to every waiter of a finished
// build and build-event hooks, both delivered from the store's outbox.
type mailConfig struct {
	// SMTPAddr is the mail server (host:port); empty disables mail.
	SMTPAddr string
	// SMTPTLS is none, starttls or tls.
	SMTPTLS string
	// SMTPUser authenticates when set; the password comes from
	// SMTPPasswordFile or the environment variable KILN_SMTP_PASSWORD.
	SMTPUser         string
	SMTPPasswordFile string
	// MailFrom is the sender address.
	MailFrom string
	// PublicURL is webstatus's base URL, used in links.
	PublicURL string
	// HookCommand runs on build events with the event JSON on stdin.
	HookCommand string
	// HookURL receives the event JSON by POST, signed with the secret in
	// HookSecretFile (header X-Kiln-Signature).
	HookURL        string
	HookSecretFile string
	// HookEvents lists the events hooks fire on (comma separated).
	HookEvents string
	// PublicAddr is the metaserver address printed in download commands.
	PublicAddr string
}

func (c *mailConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.SMTPAddr, "smtp-addr", "", "SMTP server HOST:PORT for notification mail (empty: no mail)")
	fs.StringVar(&c.SMTPTLS, "smtp-tls", "starttls", "SMTP transport security: none, starttls or tls")
	fs.StringVar(&c.SMTPUser, "smtp-user", "", "SMTP user (password from --smtp-password-file or env KILN_SMTP_PASSWORD)")
	fs.StringVar(&c.SMTPPasswordFile, "smtp-password-file", "", "file holding the SMTP password")
	fs.StringVar(&c.MailFrom, "mail-from", "kiln@localhost", "sender address of notification mail")
	fs.StringVar(&c.PublicURL, "public-url", "http://127.0.0.1:8080", "webstatus base URL used in mail links")
	fs.StringVar(&c.HookCommand, "hook-command", "", "command run on build events (event JSON on stdin)")
	fs.StringVar(&c.HookURL, "hook-url", "", "webhook URL receiving build events (HMAC-signed POST)")
	fs.StringVar(&c.HookSecretFile, "hook-secret-file", "", "file holding the webhook HMAC secret")
	fs.StringVar(&c.HookEvents, "hook-events", "succeeded,failed,error", "events that fire hooks")
	fs.StringVar(&c.PublicAddr, "public-addr", "", "metaserver address shown in download commands (default: --listen)")
}

// Validate checks the notification flags.
func (c *mailConfig) Validate() error {
	switch c.SMTPTLS {
	case "none", "starttls", "tls":
	default:
		return fmt.Errorf("--smtp-tls must be none, starttls or tls, not %q", c.SMTPTLS)
	}
	if c.SMTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.SMTPAddr); err != nil {
			return fmt.Errorf("--smtp-addr %q: %w", c.SMTPAddr, err)
		}
		if _, err := mail.ValidateAddress(c.MailFrom); err != nil {
			return fmt.Errorf("--mail-from: %w", err)
		}
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("--public-url %q must be an http(s) URL", c.PublicURL)
	}
	if c.HookURL != "" && c.HookSecretFile == "" {
		return errors.New("--hook-url needs --hook-secret-file")
	}
	for _, h := range c.hooks() {
		if err := h.Validate(); err != nil {
			return err
		}
	}
	return nil
}

func (c *mailConfig) hooks() []mail.HookConfig {
	var events []string
	for _, e := range strings.Split(c.HookEvents, ",") {
		if e = strings.TrimSpace(e); e != "" {
			events = append(events, e)
		}
	}
	var out []mail.HookConfig
	if c.HookCommand != "" {
		out = append(out, mail.HookConfig{Command: c.HookCommand, Events: events})
	}
	if c.HookURL != "" {
		out = append(out, mail.HookConfig{WebhookURL: c.HookURL, Events: events})
	}
	return out
}

// build returns the final-build hook and the outbox sender.
func (c *mailConfig) build(st store.Store, log *slog.Logger) (*notifier, *mail.Sender, error) {
	password := os.Getenv("KILN_SMTP_PASSWORD")
	if c.SMTPPasswordFile != "" {
		b, err := os.ReadFile(c.SMTPPasswordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--smtp-password-file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	var secret []byte
	if c.HookSecretFile != "" {
		b, err := os.ReadFile(c.HookSecretFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--hook-secret-file: %w", err)
		}
		secret = []byte(strings.TrimSpace(string(b)))
	}
	sender, err := mail.NewSender(st, mail.SenderConfig{
		SMTPAddr: c.SMTPAddr, TLS: c.SMTPTLS, User: c.SMTPUser, Password: password, From: c.MailFrom,
		Logger: log.With("component", "outbox"), WebhookSecret: secret,
	})
	if err != nil {
		return nil, nil, err
	}
	n := &notifier{cfg: c, hooks: c.hooks(), mailOn: c.SMTPAddr != "", kick: sender.Kick}
	return n, sender, nil
}

// notifier queues a mail per waiting requester and one event per hook, in
// the transaction that ends the build.
type notifier struct {
	cfg    *mailConfig
	hooks  []mail.HookConfig
	mailOn bool
	kick   func()
}

// GroupFinished implements server.GroupHook: one summary mail to the
// group's requester listing every build.
func (n *notifier) GroupFinished(tx store.Tx, g *store.RequestGroup, builds []*kilnv1.Build) error {
	if !n.mailOn {
		return nil
	}
	subject, text, html := mail.ComposeSummary(builds, mail.ComposeOptions{PublicURL: n.cfg.PublicURL})
	if err := mail.Enqueue(tx, &store.Outbox{Kind: "mail", To: g.GetEmail(), Subject: subject, Text: text, Html: html, BuildId: builds[len(builds)-1].GetId()}); err != nil {
		return err
	}
	n.kick()
	return nil
}

// BuildFinished implements server.FinalHook.
func (n *notifier) BuildFinished(tx store.Tx, b *kilnv1.Build, waiting []*store.Request, logTail string) error {
	queued := false
	if n.mailOn {
		subject, text, html := mail.Compose(b, mail.ComposeOptions{PublicURL: n.cfg.PublicURL, LogTail: logTail, MetaserverAddr: n.cfg.PublicAddr})
		seen := map[string]bool{}
		for _, r := range waiting {
			if seen[r.GetEmail()] {
				continue // one mail per address per build
			}
			seen[r.GetEmail()] = true
			if err := mail.Enqueue(tx, &store.Outbox{Kind: "mail", To: r.GetEmail(), Subject: subject, Text: text, Html: html, BuildId: b.GetId()}); err != nil {
				return err
			}
			queued = true
		}
	}
	if len(n.hooks) > 0 {
		if err := mail.EnqueueEvent(tx, n.hooks, b, n.cfg.PublicURL); err != nil {
			return err
		}
		queued = true
	}
	if queued {
		n.kick()
	}
	return nil
}
