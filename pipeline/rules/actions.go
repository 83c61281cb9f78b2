package rules

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
	"github.com/anchorline/anchorline/schemas/stream"
)

// Headers of a webhook request: the event id, and an Ed25519 signature of the body by the
// rules stage's key (the commander's, whose public key the ledger's registry holds) with
// that key.
const (
	HeaderEvent     = "X-Anchorline-Event"
	HeaderSignature = "X-Anchorline-Signature" // "ed25519=<hex signature of the body>"
	HeaderKey       = "X-Anchorline-Key"       // the signing key, hex
	// HeaderActions is on every message of the Events stream: the kinds of the rule's
	// actions, comma-separated, so that an action runner skips the events it has nothing for
	// without decoding them.
	HeaderActions = "Anchorline-Actions"
)

// ActionStats are the action runners' counters.
type ActionStats struct {
	Commands        uint64 `json:"commands"`         // commands signed, stored as readings and sent
	Webhooks        uint64 `json:"webhooks"`         // webhook requests answered 2xx
	WebhookFailures uint64 `json:"webhook_failures"` // attempts that failed (each is retried)
}

// Actions carries out the actions of events other than the event itself: it reads the
// Events stream through two durable consumers (stream.CommandsConsumer, pinned to one process
// so that the commander's seqs increase; stream.WebhooksConsumer, shared) and acknowledges an
// event only once its action is done, so that no action is lost to a crash.
type Actions struct {
	js     jetstream.JetStream
	stage  *Stage
	key    ed25519.PrivateKey
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	lastSeq uint64

	commands, webhooks, webhookFailures atomic.Uint64
}

// NewActions returns the action runner of stage, signing with key (the commander's).
func NewActions(js jetstream.JetStream, stage *Stage, key ed25519.PrivateKey) *Actions {
	return &Actions{js: js, stage: stage, key: key, client: &http.Client{Timeout: 10 * time.Second}, now: stage.cfg.Now}
}

// Stats returns the counters.
func (a *Actions) Stats() ActionStats {
	return ActionStats{Commands: a.commands.Load(), Webhooks: a.webhooks.Load(), WebhookFailures: a.webhookFailures.Load()}
}

// Run runs both consumers until ctx ends.
func (a *Actions) Run(ctx context.Context) error {
	errs := make(chan error, 2)
	go func() { errs <- a.consume(ctx, stream.CommandsConsumer, rule.ActionCommand, true, a.command) }()
	go func() { errs <- a.consume(ctx, stream.WebhooksConsumer, rule.ActionWebhook, false, a.webhook) }()
	err := errors.Join(<-errs, <-errs)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// consume hands each event of the durable consumer to do; do's error naks it for a later
// attempt (backing off with the number of deliveries), so an action is retried until done.
func (a *Actions) consume(ctx context.Context, durable, kind string, pinned bool, do func(context.Context, rule.Event, rule.Rule) error) error {
	c, err := a.js.Consumer(ctx, stream.Events, durable)
	if err != nil {
		return fmt.Errorf("rules: actions: %w", err)
	}
	var opts []jetstream.PullMessagesOpt
	if pinned {
		opts = append(opts, jetstream.PullPriorityGroup(stream.RulesGroup))
	}
	it, err := c.Messages(opts...)
	if err != nil {
		return fmt.Errorf("rules: actions: %w", err)
	}
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("rules: actions %s: %w", durable, err)
		}
		if kinds := m.Headers().Get(HeaderActions); kinds != "" && !slices.Contains(strings.Split(kinds, ","), kind) {
			_ = m.Ack()
			continue
		}
		var ev rule.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			a.stage.log.Error("rules: an event that does not decode; its actions are skipped", "subject", m.Subject(), "err", err)
			_ = m.Ack()
			continue
		}
		r, err := a.ruleOf(ctx, ev)
		if err == nil {
			err = do(ctx, ev, r)
		}
		if err != nil {
			n := uint64(1)
			if md, mdErr := m.Metadata(); mdErr == nil {
				n = md.NumDelivered
			}
			delay := min(time.Duration(1<<min(n, 6))*time.Second, time.Minute)
			a.stage.log.Warn("rules: action failed; retrying", "consumer", durable, "event", ev.ID, "rule", ev.Rule, "device", ev.Device, "attempt", n, "in", delay, "err", err)
			_ = m.NakWithDelay(delay)
			continue
		}
		_ = m.Ack()
	}
}

// ruleOf is the rule version an event names, from the rules in force at its height.
func (a *Actions) ruleOf(ctx context.Context, ev rule.Event) (rule.Rule, error) {
	rs, err := a.stage.rulesAt(ctx, int64(ev.Height))
	if err != nil {
		return rule.Rule{}, err
	}
	for _, f := range rs.rules {
		if f.key.id == ev.Rule && f.key.version == ev.Version {
			return f.c.Rule, nil
		}
	}
	return rule.Rule{}, fmt.Errorf("rule %s version %d is not in force at height %d", ev.Rule, ev.Version, ev.Height)
}

// command signs each command action of the event's rule as a reading of the commander,
// publishes it for ingest (stored and anchored like any reading; its Nats-Msg-Id, from the
// event and the action, makes a repeat a duplicate JetStream drops) and sends it to the device.
func (a *Actions) command(ctx context.Context, ev rule.Event, r rule.Rule) error {
	for i, act := range r.Actions {
		if act.Kind != rule.ActionCommand {
			continue
		}
		raw, err := reading.NewCommand(reading.NewEd25519Key(a.key), rule.Commander, a.nextSeq(), a.now(), ev.Device, act.Command, act.Args, ev.ID)
		if err != nil {
			return err
		}
		m := nats.NewMsg(reading.Subject(rule.Commander))
		m.Data = raw
		m.Header.Set(jetstream.MsgIDHeader, "command:"+ev.ID+":"+strconv.Itoa(i))
		if _, err := a.js.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("store command %s of event %s: %w", act.Command, ev.ID, err)
		}
		if err := a.js.Conn().Publish(reading.CommandsSubject(ev.Device), raw); err != nil {
			return fmt.Errorf("send command %s to %s: %w", act.Command, ev.Device, err)
		}
		a.commands.Add(1)
	}
	return nil
}

// nextSeq is the commander's next seq: the current Unix time in microseconds, or one more
// than the last (so seqs increase across restarts of the one process pinned to commands).
func (a *Actions) nextSeq() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastSeq = max(uint64(a.now().UnixMicro()), a.lastSeq+1)
	return a.lastSeq
}

// webhook POSTs the event's JSON to each webhook action's URL, signed; any answer but 2xx is
// an error (retried).
func (a *Actions) webhook(ctx context.Context, ev rule.Event, r rule.Rule) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	sig := ed25519.Sign(a.key, body)
	pub := a.key.Public().(ed25519.PublicKey)
	for _, act := range r.Actions {
		if act.Kind != rule.ActionWebhook {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, act.URL, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(HeaderEvent, ev.ID)
		req.Header.Set(HeaderSignature, "ed25519="+hex.EncodeToString(sig))
		req.Header.Set(HeaderKey, hex.EncodeToString(pub))
		resp, err := a.client.Do(req)
		if err != nil {
			a.webhookFailures.Add(1)
			return fmt.Errorf("webhook %s: %w", act.URL, err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			a.webhookFailures.Add(1)
			return fmt.Errorf("webhook %s answered %s", act.URL, resp.Status)
		}
		a.webhooks.Add(1)
	}
	return nil
}
