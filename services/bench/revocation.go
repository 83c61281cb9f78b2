package bench

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
)

// revocation measures how soon a revocation takes effect: a device publishes every 10 ms, its
// key is revoked on the ledger, and the results are how long after the revoking block was
// committed the last reading that ingest still accepted was published (the workers learn of
// the revocation by following new blocks; the bench keeps publishing for the device as the
// simulator would, to see ingest's side), and how long after it the broker closed the
// device's own connection (the auth service's side).
func (r *runner) revocation(ctx context.Context) (accepted, disconnected time.Duration, err error) {
	r.say("revocation: a device publishing every 10 ms is revoked on the ledger")
	admin := ed25519.NewKeyFromSeed(make([]byte, 32))
	key, err := reading.GenerateKey(reading.Ed25519)
	if err != nil {
		return 0, 0, err
	}
	dev := &reading.Device{ID: "bench-revoked", Key: key}
	reg, err := entry.NewRegister(admin, dev.ID, key.Public(), time.Now())
	if err != nil {
		return 0, 0, err
	}
	if _, err := r.node.Client().Submit(ctx, reg); err != nil {
		return 0, 0, fmt.Errorf("bench: register: %w", err)
	}
	// The device's own connection, authenticated by the callout against the registry.
	devOpts, err := connect.Options(dev.ID, key)
	if err != nil {
		return 0, 0, err
	}
	closed := make(chan time.Time, 1)
	devConn, err := nats.Connect(r.natsURL, append(devOpts, nats.MaxReconnects(0), nats.Name("bench revoked device"),
		nats.ClosedHandler(func(*nats.Conn) { closed <- time.Now() }))...)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: the registered device cannot connect: %w", err)
	}
	defer devConn.Close()
	publishedAt := map[uint64]time.Time{}
	publish := func() error {
		raw, err := dev.Next([]reading.Metric{{Name: "temp", Value: 20}}, nil)
		if err != nil {
			return err
		}
		msg := &nats.Msg{Subject: reading.Subject(dev.ID), Data: raw, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(dev.ID, dev.Seq))
		publishedAt[dev.Seq] = time.Now()
		_, err = r.js.PublishMsg(ctx, msg)
		return err
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for range 50 { // known to the workers before the revocation
		if err := publish(); err != nil {
			return 0, 0, err
		}
		<-tick.C
	}
	rev, err := entry.NewRevoke(admin, dev.ID, time.Now())
	if err != nil {
		return 0, 0, err
	}
	if _, err := r.node.Client().Submit(ctx, rev); err != nil {
		return 0, 0, fmt.Errorf("bench: revoke: %w", err)
	}
	committed := time.Now() // Submit returns once the block is committed
	for time.Since(committed) < 3*time.Second {
		if err := publish(); err != nil {
			return 0, 0, err
		}
		<-tick.C
	}
	var closedAt time.Time
	select {
	case closedAt = <-closed:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(27 * time.Second): // 30 s after the block
		return 0, 0, fmt.Errorf("%w: the revoked device's connection was still open 30 s after its block", ErrCheck)
	}
	for {
		var stored, rejected uint64
		if err := r.ch.QueryRow(ctx, "SELECT (SELECT count() FROM "+r.db+".readings WHERE device_id = ?), (SELECT count() FROM "+r.db+".rejected WHERE device_id = ? AND reason = ?)",
			dev.ID, dev.ID, string(verify.RevokedDevice)).Scan(&stored, &rejected); err != nil {
			return 0, 0, err
		}
		if stored+rejected >= uint64(len(publishedAt)) {
			if rejected == 0 {
				return 0, 0, fmt.Errorf("%w: the revocation never took effect (every reading of the revoked device was accepted)", ErrCheck)
			}
			break
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	rows, err := r.ch.Query(ctx, "SELECT seq FROM "+r.db+".readings WHERE device_id = ?", dev.ID)
	if err != nil {
		return 0, 0, err
	}
	defer rows.Close()
	var last time.Time
	for rows.Next() {
		var seq uint64
		if err := rows.Scan(&seq); err != nil {
			return 0, 0, err
		}
		if at := publishedAt[seq]; at.After(last) {
			last = at
		}
	}
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	return max(last.Sub(committed), 0), max(closedAt.Sub(committed), 0), nil
}
