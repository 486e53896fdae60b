package mail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	netmail "net/mail"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// SenderConfig configures a Sender. Zero values take the documented
// defaults.
type SenderConfig struct {
	// SMTPAddr is the SMTP server as host:port. Empty disables mail: mail
	// records stay queued (logged once) while webhooks and commands still
	// go out.
	SMTPAddr string
	// TLS is how the SMTP connection is protected: TLSNone, TLSStartTLS
	// (the default when empty) or TLSImplicit.
	TLS string
	// User and Password authenticate to the SMTP server (the best
	// mechanism it offers); empty User: no authentication.
	User, Password string
	// From is the sender, "kiln@example.org" or "Kiln <kiln@example.org>";
	// required when SMTPAddr is set. Its domain also ends Message-IDs.
	From string
	// Logger receives the Sender's decisions, used as given; nil means
	// slog.Default() with component=outbox.
	Logger *slog.Logger
	// Backoff is the delay before retrying a record that failed attempt
	// times (attempt >= 1); nil means DefaultBackoff (1s doubling to 5m,
	// with jitter). Tests shorten it.
	Backoff func(attempt int) time.Duration
	// Now is the clock that decides what is due and when to retry; nil
	// means time.Now. Tests use a fake clock.
	Now func() time.Time
	// Poll is how often the outbox is checked without a Kick, a safety net
	// for records enqueued without one and for retries coming due; 0 means
	// 1s.
	Poll time.Duration
	// HTTPClient posts webhooks; nil means a client with a 30s timeout
	// that does not follow redirects.
	HTTPClient *http.Client
	// WebhookSecret keys the X-Kiln-Signature HMAC; empty: no signature
	// header is sent.
	WebhookSecret []byte
	// CommandTimeout bounds one hook command run, after which its process
	// group is killed; 0 means 30s.
	CommandTimeout time.Duration
	// SMTPTimeout bounds connecting to and each exchange with the SMTP
	// server; 0 means 30s.
	SMTPTimeout time.Duration
}

// Defaults of SenderConfig.
const (
	DefaultPoll        = time.Second
	DefaultSMTPTimeout = 30 * time.Second
)

// drainBatch is how many due records one store read fetches.
const drainBatch = 64

// maxLastError bounds the error text kept in a record.
const maxLastError = 1024

// ErrConfig is wrapped by NewSender's errors about its configuration.
var ErrConfig = errors.New("mail: invalid sender configuration")

// Sender delivers due outbox records: mail by SMTP, webhooks by HTTP POST,
// commands by sh -c. Create it with NewSender, start one Run, and Kick it
// after committing new records. Kick and Collectors are safe for
// concurrent use.
type Sender struct {
	st       store.Store
	cfg      SenderConfig
	log      *slog.Logger
	smtpHost string
	smtpPort int
	from     *netmail.Address
	// fromDomain ends Message-IDs.
	fromDomain string
	kick       chan struct{}
	metrics    *metrics
	heldOnce   sync.Once
	// rounds counts finished drain rounds; tests wait on it.
	rounds atomic.Uint64
}

// NewSender checks cfg, applies its defaults and returns a Sender reading
// and updating the outbox of st. It does not connect to anything. Errors
// about cfg wrap ErrConfig.
func NewSender(st store.Store, cfg SenderConfig) (*Sender, error) {
	if st == nil {
		return nil, fmt.Errorf("%w: nil store", ErrConfig)
	}
	s := &Sender{st: st, kick: make(chan struct{}, 1)}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default().With("component", "outbox")
	}
	s.log = cfg.Logger
	if cfg.Backoff == nil {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient()
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = defaultCommandTimeout
	}
	if cfg.SMTPTimeout <= 0 {
		cfg.SMTPTimeout = DefaultSMTPTimeout
	}
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	switch cfg.TLS {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return nil, fmt.Errorf("%w: TLS %q, want %s, %s or %s", ErrConfig, cfg.TLS, TLSNone, TLSStartTLS, TLSImplicit)
	}
	if cfg.SMTPAddr != "" {
		host, port, err := net.SplitHostPort(cfg.SMTPAddr)
		if err != nil {
			return nil, fmt.Errorf("%w: SMTP address %q: %w", ErrConfig, cfg.SMTPAddr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 || host == "" {
			return nil, fmt.Errorf("%w: SMTP address %q: want host:port", ErrConfig, cfg.SMTPAddr)
		}
		s.smtpHost, s.smtpPort = host, p
		if cfg.From == "" {
			return nil, fmt.Errorf("%w: a From address is required with an SMTP server", ErrConfig)
		}
		if s.from, err = parseFrom(cfg.From); err != nil {
			return nil, fmt.Errorf("%w: From: %w", ErrConfig, err)
		}
		s.fromDomain = domainOf(s.from.Address)
	}
	s.cfg = cfg
	s.metrics = newMetrics(st, func(err error) {
		s.log.Error("outbox length unreadable", "error", err)
	})
	return s, nil
}

// Collectors returns the Sender's metrics for the caller to register:
// kiln_{mail,webhook,command}_{sent,failed}_total and the gauge
// kiln_outbox_length. Register them once per registry.
func (s *Sender) Collectors() []prometheus.Collector { return s.metrics.collectors() }

// Kick makes Run look at the outbox now instead of at its next poll. It
// never blocks; kicks while a round runs coalesce into one more round.
func (s *Sender) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run delivers due outbox records until ctx is done, then returns nil. It
// drains at start, on every Kick and every Poll. Errors (store, network,
// receivers) are logged and retried, never returned. Call Run once. A
// delivery cut short by ctx leaves its record untouched, without counting
// an attempt.
func (s *Sender) Run(ctx context.Context) error {
	if s.smtpHost == "" {
		s.log.Warn("mail disabled: no SMTP server configured (--smtp-addr); no mail is queued or sent, hooks still run")
	} else {
		s.log.Info("outbox sender started", "smtp_addr", s.cfg.SMTPAddr, "tls", s.cfg.TLS, "poll", s.cfg.Poll)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-timer.C:
		}
		s.drain(ctx)
		s.rounds.Add(1)
		timer.Reset(s.cfg.Poll)
	}
}

// drain delivers every record due now, each at most once per round (a
// record whose retry is due at once waits for the next round).
func (s *Sender) drain(ctx context.Context) {
	seen := make(map[uint64]bool)
	limit := drainBatch
	for ctx.Err() == nil {
		now := s.cfg.Now()
		var recs []*store.Outbox
		err := s.st.View(func(tx store.Tx) error {
			var err error
			recs, err = tx.DueOutbox(now, limit)
			return err
		})
		if err != nil {
			s.log.Error("outbox read failed; retrying at the next poll", "error", err, "retry_in", s.cfg.Poll)
			return
		}
		var mails, others []*store.Outbox
		for _, r := range recs {
			if seen[r.GetId()] {
				continue
			}
			seen[r.GetId()] = true
			switch {
			case r.GetKind() == KindMail && s.smtpHost == "":
				s.heldOnce.Do(func() {
					s.log.Warn("mail held in the outbox: no SMTP server configured", "outbox_id", r.GetId())
				})
			case r.GetKind() == KindMail:
				mails = append(mails, r)
			default:
				others = append(others, r)
			}
		}
		if len(mails)+len(others) == 0 {
			if len(recs) < limit {
				return
			}
			// Every record of a full page was seen or held: look further.
			limit *= 2
			continue
		}
		if len(mails) > 0 {
			for i, err := range s.sendMails(ctx, mails) {
				s.settle(ctx, mails[i], err)
			}
		}
		for _, r := range others {
			if ctx.Err() != nil {
				return
			}
			s.settle(ctx, r, s.deliverOne(ctx, r))
		}
	}
}

// deliverOne delivers a webhook or command record.
func (s *Sender) deliverOne(ctx context.Context, r *store.Outbox) error {
	switch r.GetKind() {
	case KindWebhook:
		return s.postWebhook(ctx, r)
	case KindCommand:
		return s.runCommand(ctx, r)
	}
	return fmt.Errorf("unknown outbox kind %q", r.GetKind())
}

// settle records the outcome of delivering r: delete it after a success,
// otherwise count the attempt and schedule the retry.
func (s *Sender) settle(ctx context.Context, r *store.Outbox, deliveryErr error) {
	attempt := r.GetAttempts() + 1
	log := s.log.With("outbox_id", r.GetId(), "kind", r.GetKind(), "build_id", r.GetBuildId(), "attempt", attempt)
	if deliveryErr == nil {
		s.count(s.metrics.sent, r.GetKind())
		err := s.st.Update(func(tx store.Tx) error { return tx.DeleteOutbox(r.GetId()) })
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			// The message went out but stays queued: it will be sent
			// again (at least once), with the same Message-ID / delivery id.
			log.Error("delivered, but the outbox record could not be deleted; it will be sent again", "error", err)
			return
		}
		log.Info("outbox record delivered")
		return
	}
	if ctx.Err() != nil {
		log.Info("delivery interrupted by shutdown; record kept for the next start")
		return
	}
	s.count(s.metrics.failed, r.GetKind())
	retryIn := s.cfg.Backoff(int(attempt))
	errText := redactRecipient(r, deliveryErr.Error())
	m := proto.Clone(r).(*store.Outbox)
	m.Attempts = attempt
	m.LastError = truncate(errText, maxLastError)
	m.NextAttemptAt = timestamppb.New(s.cfg.Now().Add(retryIn))
	if err := s.st.Update(func(tx store.Tx) error { return tx.PutOutbox(m) }); err != nil {
		// The record is unchanged in the store and due: retried next round.
		log.Error("delivery failed and the retry could not be recorded", "error", errText, "store_error", err)
		return
	}
	log.Warn("delivery failed; will retry", "error", errText, "retry_in", retryIn)
}

// redactRecipient replaces a mail record's address in text: SMTP servers
// quote the recipient in their refusals, and addresses stay out of the
// server's log and of last_error, which status pages may show.
func redactRecipient(r *store.Outbox, text string) string {
	if r.GetKind() != KindMail || r.GetTo() == "" {
		return text
	}
	return regexp.MustCompile(`(?i)`+regexp.QuoteMeta(r.GetTo())).ReplaceAllLiteralString(text, "<recipient>")
}

func (s *Sender) count(m map[string]prometheus.Counter, kind string) {
	if c, ok := m[kind]; ok {
		c.Inc()
	}
}
