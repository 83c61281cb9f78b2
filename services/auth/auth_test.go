package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/anchorline/anchorline/anchor/anchoring"
	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/pipeline/consume"
	"github.com/anchorline/anchorline/pipeline/verify"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/reading/connect"
	"github.com/anchorline/anchorline/schemas/stream"
)

// registry is a device registry held in memory: the ledger's part in these tests (the stack's
// tests run the callout over the real ledger).
type registry struct {
	mu   sync.Mutex
	keys map[string]verify.Key
}

func (r *registry) Lookup(_ context.Context, device string) (verify.Key, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.keys[device]
	return k, ok, nil
}

func (r *registry) add(id string, pk reading.PublicKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys[id] = verify.Key{Device: id, Key: pk}
}

func (r *registry) revoke(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.keys[id]
	k.Revoked = true
	r.keys[id] = k
}

// broker is a NATS server with Anchorline's auth setup and the callout service answering.
type broker struct {
	t     *testing.T
	url   string
	setup Setup
	svc   *Service
	sys   *nats.Conn
	reg   *registry
}

// startEmbedded runs the server in this process from auth.conf.
func startEmbedded(t *testing.T) *broker {
	t.Helper()
	setup, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts, err := setup.ServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir, opts.NoSigs = "127.0.0.1", server.RANDOM_PORT, true, t.TempDir(), true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(srv.Shutdown)
	return newBroker(t, setup, srv.ClientURL())
}

func newBroker(t *testing.T, setup Setup, url string) *broker {
	t.Helper()
	b := &broker{t: t, url: url, setup: setup, reg: &registry{keys: map[string]verify.Key{}}}
	svc, err := New(setup, b.reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	b.svc = svc
	nc := b.service(RoleAuth)
	b.sys = b.service(RoleSystem)
	stop, err := svc.Serve(nc, b.sys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	// The streams, as the admin tools (or ingest and anchoring) make them.
	js, err := jetstream.New(b.service(RoleAdmin))
	if err != nil {
		t.Fatal(err)
	}
	if err := consume.EnsureStreams(context.Background(), js, 1000, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// service connects with a role's credentials.
func (b *broker) service(r Role, extra ...nats.Option) *nats.Conn {
	b.t.Helper()
	nc, err := b.connect(r, extra...)
	if err != nil {
		b.t.Fatalf("%s connects: %v", r, err)
	}
	return nc
}

func (b *broker) connect(r Role, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := ConnectOptions(r, b.setup.File(r))
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(b.url, append(opts, extra...)...)
	if err == nil {
		b.t.Cleanup(nc.Close)
	}
	return nc, err
}

// device registers a new device of alg and returns its key.
func (b *broker) device(id string, alg reading.Alg) reading.PrivateKey {
	b.t.Helper()
	k, err := reading.GenerateKey(alg)
	if err != nil {
		b.t.Fatal(err)
	}
	b.reg.add(id, k.Public())
	return k
}

// asyncErrs collects a connection's asynchronous errors (permission violations).
type asyncErrs struct {
	mu   sync.Mutex
	errs []error
}

func (a *asyncErrs) option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		a.mu.Lock()
		a.errs = append(a.errs, err)
		a.mu.Unlock()
	})
}

func (a *asyncErrs) has(substr string) (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.errs {
		if strings.Contains(strings.ToLower(e.Error()), strings.ToLower(substr)) {
			return true, ""
		}
	}
	return false, fmt.Sprintf("errors so far: %v", a.errs)
}

func (b *broker) connectDevice(id string, key reading.PrivateKey, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := connect.Options(id, key)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(b.url, append(append(opts, nats.MaxReconnects(0)), extra...)...)
	if err == nil {
		b.t.Cleanup(nc.Close)
	}
	return nc, err
}

func signed(t *testing.T, id string, key reading.PrivateKey) *nats.Msg {
	t.Helper()
	d := reading.Device{ID: id, Key: key}
	raw, err := d.Next([]reading.Metric{{Name: "t", Value: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: reading.Subject(id), Data: raw}
}

func streamMsgs(t *testing.T, b *broker) uint64 {
	t.Helper()
	js, err := jetstream.New(b.service(RoleAdmin))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), stream.Readings)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestDevices(t *testing.T) { testDevices(t, startEmbedded(t)) }

// testDevices runs the device cases of issue 12 against a broker: who may connect, what a
// connected device may do, and what happens at revocation.
func testDevices(t *testing.T, b *broker) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, alg := range []reading.Alg{reading.Ed25519, reading.ES256} {
		t.Run("publishes its own readings/"+string(alg), func(t *testing.T) {
			id := "dev-" + strings.ToLower(string(alg))
			key := b.device(id, alg)
			nc, err := b.connectDevice(id, key)
			if err != nil {
				t.Fatalf("a registered %s device cannot connect: %v", alg, err)
			}
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			before := streamMsgs(t, b)
			if _, err := js.PublishMsg(ctx, signed(t, id, key)); err != nil {
				t.Fatalf("publish on its own subject: %v", err)
			}
			if got := streamMsgs(t, b); got != before+1 {
				t.Fatalf("stream holds %d messages, want %d", got, before+1)
			}
		})
	}

	t.Run("unknown key refused at connect", func(t *testing.T) {
		stranger, _ := reading.GenerateKey(reading.Ed25519)
		_, err := b.connectDevice("stranger", stranger)
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("unknown device: err = %v, want an authorization violation", err)
		}
		// A registered id with another key.
		b.device("victim", reading.Ed25519)
		_, err = b.connectDevice("victim", stranger)
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("registered id, other key: err = %v, want an authorization violation", err)
		}
		// No credentials at all.
		_, err = nats.Connect(b.url, nats.MaxReconnects(0))
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("anonymous client: err = %v, want an authorization violation", err)
		}
		st := b.svc.Stats()
		if st.Refused[RefusedUnknown] == 0 || st.Refused[RefusedWrongKey] == 0 || st.Refused[RefusedNoID] == 0 {
			t.Fatalf("refusals not counted: %+v", st)
		}
		await.Until(t, ctx, "server refusals counted", func() (bool, string) {
			st := b.svc.Stats()
			return st.ServerRefused >= 3, fmt.Sprintf("server refusals so far: %d", st.ServerRefused)
		})
	})

	t.Run("another device's subject refused by the server", func(t *testing.T) {
		key := b.device("forger", reading.Ed25519)
		victim := b.device("target", reading.Ed25519)
		var ae asyncErrs
		nc, err := b.connectDevice("forger", key, ae.option())
		if err != nil {
			t.Fatal(err)
		}
		before := streamMsgs(t, b)
		js, _ := jetstream.New(nc)
		forged := signed(t, "target", victim)
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := js.PublishMsg(pctx, forged); err == nil {
			t.Fatal("a publish on another device's subject was acknowledged")
		}
		await.Until(t, ctx, "permission error for the publish", func() (bool, string) { return ae.has("permissions violation for publish") })
		if got := streamMsgs(t, b); got != before {
			t.Fatalf("stream went from %d to %d messages: the forged reading got in", before, got)
		}
	})

	t.Run("subscribing to readings or calling the JetStream API refused", func(t *testing.T) {
		key := b.device("snoop", reading.Ed25519)
		var ae asyncErrs
		nc, err := b.connectDevice("snoop", key, ae.option())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.SubscribeSync(stream.ReadingsSubjects); err != nil {
			t.Fatal(err)
		}
		await.Until(t, ctx, "permission error for the subscription", func() (bool, string) { return ae.has("permissions violation for subscription") })
		js, _ := jetstream.New(nc)
		ictx, icancel := context.WithTimeout(ctx, 2*time.Second)
		defer icancel()
		if _, err := js.Stream(ictx, stream.Readings); err == nil {
			t.Fatal("a device read the stream's info")
		}
		await.Until(t, ctx, "permission error for the JetStream API", func() (bool, string) { return ae.has("$JS.API") })
	})

	t.Run("revocation", func(t *testing.T) {
		key := b.device("doomed", reading.Ed25519)
		closed := make(chan struct{})
		nc, err := b.connectDevice("doomed", key, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
		if err != nil {
			t.Fatal(err)
		}
		b.reg.revoke("doomed")
		n, err := b.svc.Kick(ctx, b.sys, []string{"doomed"})
		if err != nil || n != 1 {
			t.Fatalf("kick: closed %d connections, err %v; want 1", n, err)
		}
		select {
		case <-closed:
		case <-ctx.Done():
			t.Fatal("the revoked device's connection stayed open")
		}
		if nc.IsConnected() {
			t.Fatal("still connected")
		}
		if _, err := b.connectDevice("doomed", key); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("revoked device reconnects: err = %v, want an authorization violation", err)
		}
		if st := b.svc.Stats(); st.Refused[Kicked] != 1 || st.Refused[RefusedRevoked] != 1 {
			t.Fatalf("kick and refusal not counted: %+v", st)
		}
	})
}

// TestServices: each role can do its job and nothing another role's credentials are for.
func TestServices(t *testing.T) { testServices(t, startEmbedded(t)) }

func testServices(t *testing.T, b *broker) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }

	// ingest: makes its streams, consumes READINGS, publishes batch records; cannot publish readings.
	ingest := b.service(RoleIngest)
	ijs, _ := jetstream.New(ingest)
	if err := (consume.Topology{Replicas: 1, MaxAckPending: 1000}).EnsureIngest(ctx, ijs); err != nil {
		t.Fatalf("ingest cannot ensure its streams: %v", err)
	}
	if err := consume.PublishBatch(ctx, ijs, stream.BatchRecord{ID: "00", Root: "00", Size: 1}); err != nil {
		t.Fatalf("ingest cannot publish a batch record: %v", err)
	}
	c, err := ijs.Consumer(ctx, stream.Readings, stream.IngestConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond)); err != nil {
		t.Fatalf("ingest cannot pull: %v", err)
	}
	key, _ := reading.GenerateKey(reading.Ed25519)
	sctx, scancel := short()
	if _, err := ijs.PublishMsg(sctx, signed(t, "x", key)); err == nil {
		t.Fatal("ingest published a reading")
	}
	scancel()

	// anchoring: makes its consumer, pulls BATCHES; cannot pull READINGS or publish batch records.
	anch := b.service(RoleAnchoring)
	ajs, _ := jetstream.New(anch)
	if err := (consume.Topology{Replicas: 1}).EnsureAnchoring(ctx, ajs); err != nil {
		t.Fatalf("anchoring cannot ensure its consumer: %v", err)
	}
	ac, err := ajs.Consumer(ctx, stream.Batches, stream.AnchorConsumer)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := ac.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range msgs.Messages() {
		got++
		if err := m.Ack(); err != nil {
			t.Fatalf("anchoring cannot ack: %v", err)
		}
	}
	if got != 1 {
		t.Fatalf("anchoring pulled %d batch records, want 1 (err %v)", got, msgs.Error())
	}
	// ... keeps its intents: writes one, lists it, purges it.
	intents, err := anchoring.OpenIntents(ctx, ajs, 1)
	if err != nil {
		t.Fatalf("anchoring cannot open its intents: %v", err)
	}
	ikv, err := ajs.KeyValue(ctx, stream.AnchorIntentsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ikv.Put(ctx, "intent."+strings.Repeat("00", 16), []byte("{}")); err != nil {
		t.Fatalf("anchoring cannot write an intent: %v", err)
	}
	for _, want := range []int{1, 0} {
		sctx, scancel = short()
		as, err := intents.List(sctx)
		scancel()
		if err != nil || len(as) != want {
			t.Fatalf("anchoring lists %d intents (%v), want %d", len(as), err, want)
		}
		if want == 1 {
			if err := intents.Remove(ctx, [16]byte{}); err != nil {
				t.Fatalf("anchoring cannot remove an intent: %v", err)
			}
		}
	}
	// Retention: anchoring reads the ingest consumer's ack floor, but takes none of its messages.
	sctx, scancel = short()
	if _, err := ajs.Consumer(sctx, stream.Readings, stream.IngestConsumer); err != nil {
		t.Fatalf("anchoring cannot read the ingest consumer's ack floor: %v", err)
	}
	scancel()
	if slices.ContainsFunc(PermissionsOf(RoleAnchoring).Publish, func(s string) bool { return strings.HasPrefix(s, "$JS.API.CONSUMER.MSG.NEXT."+stream.Readings) }) {
		t.Fatal("anchoring may pull readings")
	}
	sctx, scancel = short()
	if err := consume.PublishBatch(sctx, ajs, stream.BatchRecord{ID: "01", Root: "00", Size: 1}); err == nil {
		t.Fatal("anchoring published a batch record")
	}
	scancel()

	// simulator: publishes readings of any device; no JetStream API.
	sim := b.service(RoleSimulator)
	sjs, _ := jetstream.New(sim)
	sctx, scancel = short()
	if _, err := sjs.PublishMsg(sctx, signed(t, "anyone", key)); err != nil {
		t.Fatalf("simulator cannot publish a reading: %v", err)
	}
	scancel()
	sctx, scancel = short()
	if _, err := sjs.Stream(sctx, stream.Readings); err == nil {
		t.Fatal("simulator used the JetStream API")
	}
	scancel()

	// A service key the setup did not make is refused.
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	_, err = nats.Connect(b.url, nats.MaxReconnects(0), nats.Nkey(pub, kp.Sign))
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unknown service key: err = %v, want an authorization violation", err)
	}
}
