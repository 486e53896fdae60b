package mail

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Kinds of outbox records: what Sender does with the record's fields.
const (
	// KindMail: an email to To (one bare address) with Subject, Text and
	// an optional HTML alternative.
	KindMail = "mail"
	// KindWebhook: Body (JSON) POSTed to the URL in To; Subject is the
	// event name sent as X-Kiln-Event.
	KindWebhook = "webhook"
	// KindCommand: To run by sh -c with Body on stdin; Subject is the
	// event name, in the environment as KILN_EVENT.
	KindCommand = "command"
)

// OutboxSequence is the store sequence outbox ids are drawn from.
const OutboxSequence = "outbox"

// ErrInvalidRecord is wrapped by Enqueue when a record cannot be delivered
// as given (unknown kind, bad address or URL, empty command).
var ErrInvalidRecord = errors.New("invalid outbox record")

// Enqueue adds m to the outbox inside tx: it draws m.Id from the "outbox"
// sequence, sets CreatedAt and NextAttemptAt to now (due at once) and
// clears the delivery bookkeeping (Attempts, LastError), then puts it. m is
// modified in place and must not be shared.
//
// Call it inside the transaction that decides the message (for a build
// mail: the one that ends the build), so the message exists if and only if
// the decision was committed. Kick the Sender after the commit to deliver
// at once rather than at its next poll.
//
// Enqueue refuses (with ErrInvalidRecord, wrapping ErrInvalidAddress for a
// bad mail address) a record it could never deliver, before touching tx.
func Enqueue(tx store.Tx, m *store.Outbox) error {
	if err := checkRecord(m); err != nil {
		return err
	}
	id, err := tx.NextID(OutboxSequence)
	if err != nil {
		return fmt.Errorf("mail: outbox id: %w", err)
	}
	now := timestamppb.New(time.Now())
	m.Id = id
	m.CreatedAt = now
	m.NextAttemptAt = now
	m.Attempts = 0
	m.LastError = ""
	if err := tx.PutOutbox(m); err != nil {
		return fmt.Errorf("mail: put outbox %d: %w", id, err)
	}
	return nil
}

// EnqueueBuildMail enqueues, inside tx, the notification about b for the
// address to, composed by Compose with opts. to is validated (an error
// wraps ErrInvalidAddress) and stored in its canonical form.
func EnqueueBuildMail(tx store.Tx, to string, b *kilnv1.Build, opts ComposeOptions) error {
	addr, err := ValidateAddress(to)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	subject, text, html := Compose(b, opts)
	return Enqueue(tx, &store.Outbox{
		Kind:    KindMail,
		To:      addr,
		Subject: subject,
		Text:    text,
		Html:    html,
		BuildId: b.GetId(),
	})
}

// checkRecord tells whether m could ever be delivered.
func checkRecord(m *store.Outbox) error {
	if m == nil {
		return fmt.Errorf("%w: nil", ErrInvalidRecord)
	}
	switch m.GetKind() {
	case KindMail:
		canon, err := ValidateAddress(m.GetTo())
		if err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
		}
		if canon != m.GetTo() {
			m.To = canon
		}
		if m.GetText() == "" && m.GetHtml() == "" {
			return fmt.Errorf("%w: mail without a body", ErrInvalidRecord)
		}
	case KindWebhook:
		if err := checkWebhookURL(m.GetTo()); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
		}
	case KindCommand:
		if m.GetTo() == "" {
			return fmt.Errorf("%w: empty command", ErrInvalidRecord)
		}
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidRecord, m.GetKind())
	}
	return nil
}

// checkWebhookURL accepts absolute http and https URLs with a host.
func checkWebhookURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("webhook URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook URL %q: want an absolute http or https URL", s)
	}
	return nil
}
