package cluster

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/anchorline/anchorline/anchor/node"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/pki"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
	"github.com/anchorline/anchorline/schemas/stream"
	"github.com/anchorline/anchorline/services/auth"
	"github.com/anchorline/anchorline/services/stack"
)

// TestNATSCluster runs three nats-server processes as one JetStream cluster with Anchorline's
// accounts and auth callout: the streams are made with three replicas; a device authenticated
// by the callout keeps publishing while the node it started on is killed (kill -9), and every
// acknowledged reading is in the stream; its revocation closes its connection on whichever node
// it is on; a stream of another replica count is refused with a message.
func TestNATSCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	setup, err := auth.Init(dir + "/auth")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := NATSServerBinary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := StartNATSCluster(ctx, bin, dir, 3, setup, pki.Dir(dir+"/tls"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	// TLS only: a client that does not speak it is refused by every node.
	adminOpts, _ := auth.ConnectOptions(auth.RoleAdmin, setup.File(auth.RoleAdmin))
	for _, n := range c.Nodes {
		if nc, err := nats.Connect("nats://"+n.ClientAddr, append(adminOpts, nats.Timeout(2*time.Second))...); err == nil {
			nc.Close()
			t.Fatalf("%s accepted a client without TLS", n.Name)
		}
	}

	// The ledger the callout answers from, with one registered device.
	admin := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	ledgerNode, err := node.Start(ctx, node.Config{Home: dir + "/ledger", ChainID: "cluster-test", TimeoutCommit: 50 * time.Millisecond,
		Admins: []ed25519.PublicKey{reading.Ed25519Public(admin)}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer ledgerNode.Stop()
	key, _ := reading.GenerateKey(reading.Ed25519)
	dev := &reading.Device{ID: "cluster-dev", Key: key}
	reg, _ := entry.NewRegister(admin, dev.ID, key.Public(), time.Now())
	if _, err := ledgerNode.Client().Submit(ctx, reg); err != nil {
		t.Fatal(err)
	}
	a, err := stack.StartAuth(ctx, setup, c.URLs(), ledgerNode.Client(), log, c.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	actx, stopAuth := context.WithCancel(ctx)
	authDone := make(chan struct{})
	go func() { defer close(authDone); _ = a.Run(actx) }()
	defer func() { stopAuth(); <-authDone }()

	anc, ajs, err := stack.ConnectNATS(ctx, c.URLs(), "cluster admin", log, c.ClientOptions(adminOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	topo := consume.Topology{Replicas: 3, MaxAckPending: 1000}
	if err := topo.EnsureIngest(ctx, ajs); err != nil {
		t.Fatalf("streams with three replicas: %v", err)
	}
	if err := (consume.Topology{Replicas: 1, MaxAckPending: 1000}).EnsureIngest(ctx, ajs); err == nil {
		t.Fatal("a stream of three replicas was accepted for nats.replicas 1")
	}

	// The device connects to the first node only at first, then to any.
	devOpts, _ := connect.Options(dev.ID, key)
	closed := make(chan struct{})
	dnc, err := nats.Connect("nats://"+c.Nodes[0].ClientAddr+","+c.URLs(), append(c.ClientOptions(devOpts...), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))...)
	if err != nil {
		t.Fatalf("device on the cluster: %v", err)
	}
	defer dnc.Close()
	djs, _ := jetstream.New(dnc)
	publish := func(n int) {
		for range n {
			raw, err := dev.Next([]reading.Metric{{Name: "t", Value: 1}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			msg := &nats.Msg{Subject: reading.Subject(dev.ID), Data: raw, Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, reading.MsgID(dev.ID, dev.Seq))
			await.Until(t, ctx, fmt.Sprintf("seq %d acknowledged", dev.Seq), func() (bool, string) {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				defer pcancel()
				_, err := djs.PublishMsg(pctx, msg) // a retry is harmless: the message id dedups it
				return err == nil, fmt.Sprint(err)
			})
		}
	}
	publish(50)
	c.Kill(0)
	publish(50)
	s, err := ajs.Stream(ctx, stream.Readings)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 100 || info.Config.Replicas != 3 {
		t.Fatalf("stream holds %d readings with %d replicas, want 100 and 3", info.State.Msgs, info.Config.Replicas)
	}
	if err := c.Start(0); err != nil { // the killed node comes back and catches up
		t.Fatal(err)
	}

	// Revoked on the ledger: the callout service closes the device's connection wherever it is.
	rev, _ := entry.NewRevoke(admin, dev.ID, time.Now())
	if _, err := ledgerNode.Client().Submit(ctx, rev); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("the revoked device is still connected to the cluster")
	}
}
