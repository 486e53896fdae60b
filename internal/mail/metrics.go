package mail

import (
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one Sender's counters. They are created per Sender and
// handed out by Collectors, so tests and programs choose their registry.
type metrics struct {
	sent, failed map[string]prometheus.Counter // by kind
	outboxLen    prometheus.GaugeFunc
}

func newMetrics(st store.Store, onErr func(error)) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return &metrics{
		sent: map[string]prometheus.Counter{
			KindMail:    counter("kiln_mail_sent_total", "Mails the SMTP server accepted."),
			KindWebhook: counter("kiln_webhook_sent_total", "Webhook deliveries answered with 2xx."),
			KindCommand: counter("kiln_command_sent_total", "Hook commands that exited 0."),
		},
		failed: map[string]prometheus.Counter{
			KindMail:    counter("kiln_mail_failed_total", "Mail delivery attempts that failed (the mail is retried)."),
			KindWebhook: counter("kiln_webhook_failed_total", "Webhook delivery attempts that failed (retried)."),
			KindCommand: counter("kiln_command_failed_total", "Hook command runs that failed or timed out (retried)."),
		},
		outboxLen: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kiln_outbox_length",
			Help: "Messages waiting in the outbox (all kinds, due or not).",
		}, func() float64 {
			var n int
			err := st.View(func(tx store.Tx) error {
				var err error
				n, err = tx.OutboxLen()
				return err
			})
			if err != nil {
				onErr(err)
				return -1
			}
			return float64(n)
		}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	var cs []prometheus.Collector
	for _, k := range []string{KindMail, KindWebhook, KindCommand} {
		cs = append(cs, m.sent[k], m.failed[k])
	}
	return append(cs, m.outboxLen)
}
