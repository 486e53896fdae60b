package mail

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
)

// Webhook request headers.
const (
	// HeaderSignature is "sha256=" + hex HMAC-SHA256 of the body keyed
	// with SenderConfig.WebhookSecret (absent when no secret is set).
	HeaderSignature = "X-Kiln-Signature"
	// HeaderEvent is the event name, e.g. "build.succeeded".
	HeaderEvent = "X-Kiln-Event"
	// HeaderDelivery is the outbox record id: the same for every retry of
	// one delivery, so a receiver can drop duplicates.
	HeaderDelivery = "X-Kiln-Delivery"
)

// defaultHTTPTimeout bounds one webhook request of the default client.
const defaultHTTPTimeout = 30 * time.Second

// maxResponseRead is how much of a webhook response is read (and quoted in
// last_error) before the connection is closed.
const maxResponseRead = 64 << 10

// Sign returns the X-Kiln-Signature value of body under secret:
// "sha256=" followed by the lower-case hex HMAC-SHA256. A receiver
// recomputes it over the raw request body and compares with hmac.Equal.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// defaultHTTPClient does not follow redirects: a redirected POST turns into
// a GET, so a 3xx is a failed delivery the operator should see.
func defaultHTTPClient() *http.Client {
	return &http.Client{
		Timeout: defaultHTTPTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// postWebhook delivers record r; nil means the receiver answered 2xx.
func (s *Sender) postWebhook(ctx context.Context, r *store.Outbox) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.GetTo(), bytes.NewReader(r.GetBody()))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "kiln-metaserver")
	req.Header.Set(HeaderEvent, headerSafe(r.GetSubject()))
	req.Header.Set(HeaderDelivery, strconv.FormatUint(r.GetId(), 10))
	if len(s.cfg.WebhookSecret) > 0 {
		req.Header.Set(HeaderSignature, Sign(s.cfg.WebhookSecret, r.GetBody()))
	}
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseRead))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &StatusError{Code: resp.StatusCode, Body: truncate(oneLine(string(head)), 200)}
	}
	return nil
}

// StatusError is a webhook receiver's answer other than 2xx.
type StatusError struct {
	Code int
	// Body is the start of the response body, on one line.
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("webhook: receiver answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Body)
}

var _ error = (*StatusError)(nil)
