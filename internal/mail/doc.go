// Package mail tells people and programs that a build has ended: it
// composes the notification mail (Compose), validates recipient addresses
// (ValidateAddress), turns build events into hook deliveries (EnqueueEvent)
// and drains the durable outbox (Sender).
//
// # One outbox, three kinds
//
// Everything to deliver is first written as a store.Outbox record, inside
// the metaserver transaction that ends the build (Enqueue, EnqueueEvent),
// so a crash can never lose a notification nor send one for a build that
// did not end. A Sender then delivers each due record by its kind:
//
//	"mail"     SMTP through github.com/wneessen/go-mail (KindMail)
//	"webhook"  HTTP POST of the event JSON, HMAC-signed (KindWebhook)
//	"command"  sh -c with the event JSON on stdin (KindCommand)
//
// Build-event hooks live in this package rather than in a package of their
// own because they share the outbox, its retry loop and its metrics with
// mail: a separate package would either duplicate the loop or import this
// one for it.
//
// # Delivery guarantees
//
// A record is deleted only after its delivery succeeded (the SMTP server
// accepted the message, the receiver answered 2xx, the command exited 0).
// A failed delivery keeps the record with one more attempt, its last error
// and a next attempt time grown by SenderConfig.Backoff; there is no
// attempt limit, nothing is dropped. Delivery is therefore at least once:
// if the store cannot record a success, the message goes out again. Mail
// carries a Message-ID derived from the record, and webhooks an
// X-Kiln-Delivery header, so receivers can drop duplicates.
//
// The lifecycle of one record:
//
//	Enqueue ──▶ due ──deliver──▶ ok ──▶ deleted
//	             ▲        │
//	             │        └─fail──▶ attempts+1, last_error,
//	             └───────────────── next_attempt_at = now + Backoff(attempts)
//
// # Privacy
//
// Requesters' addresses live only in the "to" of their own mail record.
// Compose and the event JSON are built from the public kilnv1.Build, which
// holds no address, and the Sender never logs a recipient.
package mail
