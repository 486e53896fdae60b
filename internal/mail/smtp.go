package mail

import (
	"context"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"strings"
	"sync"

	"github.com/kilnbuild/kiln/internal/store"
	gomail "github.com/wneessen/go-mail"
)

// TLS modes of SenderConfig.TLS.
const (
	// TLSNone speaks plain SMTP and never tries STARTTLS (loopback relays,
	// test sinks).
	TLSNone = "none"
	// TLSStartTLS requires STARTTLS: a server without it is an error, never
	// a silent fallback to plain text. The default.
	TLSStartTLS = "starttls"
	// TLSImplicit dials TLS from the first byte (SMTPS, usually port 465).
	TLSImplicit = "tls"
)

// sendMails delivers the mail records recs over one SMTP connection and
// returns one error per record (nil: the server accepted the message).
func (s *Sender) sendMails(ctx context.Context, recs []*store.Outbox) []error {
	errs := make([]error, len(recs))
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	client, err := gomail.NewClient(s.smtpHost, s.smtpOptions()...)
	if err != nil {
		return fail(fmt.Errorf("smtp client: %w", err))
	}
	var dialed trackedConns
	if s.cfg.TLS != TLSImplicit {
		// go-mail only wraps its own dialer in TLS for implicit TLS, so
		// the tracking dialer is used for the other modes only.
		if err := gomail.WithDialContextFunc(dialed.dial)(client); err != nil {
			return fail(fmt.Errorf("smtp client: %w", err))
		}
	}
	sc, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		dialed.closeAll()
		return fail(fmt.Errorf("smtp %s: %w", s.cfg.SMTPAddr, err))
	}
	defer func() {
		if err := client.CloseWithSMTPClient(sc); err != nil {
			s.log.Debug("smtp close failed", "error", err)
		}
		dialed.closeAll()
	}()
	for i, r := range recs {
		msg, err := s.message(r)
		if err != nil {
			errs[i] = err
			continue
		}
		err = client.SendWithSMTPClient(sc, msg)
		if msg.IsDelivered() {
			// The server took responsibility for the message (250 after
			// DATA); an error after that (RSET) must not make us send it
			// twice.
			if err != nil {
				s.log.Debug("smtp error after the message was accepted", "outbox_id", r.GetId(), "error", redactRecipient(r, err.Error()))
			}
			continue
		}
		if err == nil {
			err = errors.New("smtp: message not accepted")
		}
		errs[i] = fmt.Errorf("smtp %s: %w", s.cfg.SMTPAddr, err)
	}
	return errs
}

func (s *Sender) smtpOptions() []gomail.Option {
	opts := []gomail.Option{gomail.WithTimeout(s.cfg.SMTPTimeout)}
	// WithTLSPolicy, not WithTLSPortPolicy: the latter moves port 25 to
	// 587, and the operator's port must be the one dialed.
	switch s.cfg.TLS {
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL(), gomail.WithTLSPolicy(gomail.NoTLS))
	}
	opts = append(opts, gomail.WithPort(s.smtpPort))
	if s.cfg.User != "" {
		opts = append(opts,
			gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(s.cfg.User),
			gomail.WithPassword(s.cfg.Password))
	}
	return opts
}

// message builds the go-mail message of record r. Every header value comes
// from a validated address or goes through headerSafe, so a record cannot
// inject a header.
func (s *Sender) message(r *store.Outbox) (*gomail.Msg, error) {
	to, err := ValidateAddress(r.GetTo())
	if err != nil {
		return nil, fmt.Errorf("recipient: %w", err)
	}
	m := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	m.FromMailAddress(s.from)
	if err := m.To(to); err != nil {
		return nil, fmt.Errorf("recipient: %w", err)
	}
	m.Subject(headerSafe(r.GetSubject()))
	// Derived from the record, so a message sent twice (success not
	// recorded) carries the same id and receivers can drop the copy.
	m.SetMessageIDWithValue(fmt.Sprintf("kiln.outbox.%d.%d@%s", r.GetId(), r.GetCreatedAt().GetSeconds(), s.fromDomain))
	m.SetDateWithValue(s.cfg.Now())
	m.SetBulk()
	m.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	switch {
	case r.GetText() != "":
		m.SetBodyString(gomail.TypeTextPlain, r.GetText())
		if r.GetHtml() != "" {
			m.AddAlternativeString(gomail.TypeTextHTML, r.GetHtml())
		}
	case r.GetHtml() != "":
		m.SetBodyString(gomail.TypeTextHTML, r.GetHtml())
	default:
		return nil, errors.New("mail record without a body")
	}
	return m, nil
}

// parseFrom accepts "kiln@example.org" or "Kiln <kiln@example.org>"; the
// address part must pass ValidateAddress.
func parseFrom(from string) (*netmail.Address, error) {
	a, err := netmail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrInvalidAddress, from, err)
	}
	addr, err := ValidateAddress(a.Address)
	if err != nil {
		return nil, err
	}
	return &netmail.Address{Name: headerSafe(a.Name), Address: addr}, nil
}

// domainOf is the part after the last @ of a valid address.
func domainOf(addr string) string { return addr[strings.LastIndexByte(addr, '@')+1:] }

// trackedConns dials TCP and remembers the connections, to close them
// whatever go-mail does.
type trackedConns struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (t *trackedConns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.conns = append(t.conns, c)
	t.mu.Unlock()
	return c, nil
}

// closeAll closes every dialed connection; closing one go-mail already
// closed is harmless.
func (t *trackedConns) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		_ = c.Close()
	}
	t.conns = nil
}
