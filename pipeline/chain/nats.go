package chain

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// Listen subscribes to the other workers' questions (AskSubject) and to the answers to this
// worker's own (TellSubject). stop unsubscribes both.
func (c *Checker) Listen() (stop func(), err error) {
	var subs []*nats.Subscription
	stop = func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, l := range []struct {
		subject string
		h       nats.MsgHandler
	}{{AskSubject, c.onAsk}, {TellSubject(c.instance), c.onTell}} {
		sub, err := c.nc.Subscribe(l.subject, l.h)
		if err != nil {
			stop()
			return func() {}, fmt.Errorf("subscribe %s: %w", l.subject, err)
		}
		subs = append(subs, sub)
	}
	return stop, nil
}

// ask publishes the questions about the waiting suspects that are due.
func (c *Checker) ask(ctx context.Context) {
	c.mu.Lock()
	leaves := c.links.due(time.Now())
	c.mu.Unlock()
	for len(leaves) > 0 {
		n := min(len(leaves), maxAsk)
		msg := nats.NewMsg(AskSubject)
		msg.Reply = TellSubject(c.instance)
		msg.Header.Set(InstanceHeader, c.instance)
		msg.Data = appendAsk(make([]byte, 0, 32*n), leaves[:n])
		if err := c.nc.PublishMsg(msg); err != nil {
			c.log.DebugContext(ctx, "chain: question not sent; ClickHouse will be asked", "err", err)
			return
		}
		leaves = leaves[n:]
	}
}

// onAsk answers another worker's question with the asked readings this worker stored lately.
func (c *Checker) onAsk(m *nats.Msg) {
	if m.Header.Get(InstanceHeader) == c.instance || m.Reply == "" {
		return
	}
	leaves := parseAsk(m.Data)
	c.mu.Lock()
	rs := c.links.answer(leaves, time.Now())
	c.mu.Unlock()
	if len(rs) == 0 {
		return
	}
	if err := c.nc.Publish(m.Reply, appendAnswer(nil, rs)); err != nil {
		c.log.Debug("chain: answer not sent", "err", err)
	}
}

// onTell settles the suspects whose predecessors another worker says it stored. Of a malformed
// answer, the records before the fault count.
func (c *Checker) onTell(m *nats.Msg) {
	rs, err := parseAnswer(m.Data)
	c.mu.Lock()
	c.links.told(rs)
	c.mu.Unlock()
	if err != nil {
		c.log.Warn("chain: malformed answer ignored", "bytes", len(m.Data), "err", err)
	}
}
