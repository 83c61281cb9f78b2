package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/schemas/clickhouse"
	"github.com/anchorline/anchorline/schemas/entry"
)

// Tables are the analysts' tables an audience sees its consented devices' rows of (DESIGN 2.5):
// the readings, the metric values, the rollups and the rule events.
var Tables = []string{"readings", "metrics", "metrics_1m", "metrics_1h", "events"}

// ViewsDatabase is the database of the filtered views, which no analyst may read: db_consented.
func ViewsDatabase(db string) string { return db + "_consented" }

// AudienceDatabase is the database an audience's analysts read: db_aud_<audience>, holding one
// table per name in Tables.
func AudienceDatabase(db, audience string) string { return db + "_aud_" + audience }

// Config is what a Syncer needs besides its connections.
type Config struct {
	// Schema is the analysts' database and, on a cluster, the cluster (statements ON CLUSTER).
	Schema clickhouse.Schema
	// Through is the cluster (a remote_servers entry) the audience tables read through. Its
	// replicas must connect as a user that may read Schema.Database and its views database
	// (remote_servers' user and password: the analysts never see them).
	Through string
	// Every is the time between two looks at the ledger.
	Every time.Duration
}

// Syncer keeps ClickHouse's audience databases and consent snapshot in step with the ledger.
type Syncer struct {
	ch     driver.Conn
	ledger *ledger.Client
	cfg    Config
	log    *slog.Logger

	audiences map[string]bool     // audiences whose database exists
	last      map[string][]string // the snapshot in ClickHouse: devices by audience
	lastSeen  bool                // last was read from ClickHouse
	height    uint64              // the ledger height of the last snapshot
}

// New returns a Syncer; Run or Sync does the work.
func New(ch driver.Conn, l *ledger.Client, cfg Config, log *slog.Logger) *Syncer {
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	return &Syncer{ch: ch, ledger: l, cfg: cfg, log: log, audiences: map[string]bool{}}
}

// Run syncs every cfg.Every until ctx ends. A round that fails is logged and tried again with
// backoff (up to 30 s between tries); what ClickHouse enforces meanwhile is the last snapshot.
func (s *Syncer) Run(ctx context.Context) error {
	wait := s.cfg.Every
	for {
		r, err := s.Sync(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			wait = min(2*wait, 30*time.Second)
			s.log.Warn("consent: cannot bring ClickHouse in step with the ledger; trying again", "err", err, "in", wait)
		default:
			wait = s.cfg.Every
			if r.Changed {
				s.log.Info("consent: ClickHouse in step with the ledger", "height", r.Height, "grants", r.Grants, "audiences", r.Audiences)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// Round is what one Sync did.
type Round struct {
	Height    uint64 // the ledger height whose consents ClickHouse now enforces
	Changed   bool   // a new snapshot was written
	Grants    int    // consents in force
	Audiences int    // audiences with a database
}

// Sync brings ClickHouse in step with the ledger's latest committed consents: a database and
// tables for every audience named in a consent entry, and a new snapshot if the consents in
// force changed.
func (s *Syncer) Sync(ctx context.Context) (Round, error) {
	cs, err := s.ledger.Consents(ctx, "", 0)
	if err != nil {
		return Round{}, fmt.Errorf("consent: ledger: %w", err)
	}
	grants, err := cs.EffectiveGrants()
	if err != nil {
		return Round{}, fmt.Errorf("consent: ledger: %w", err)
	}
	want := map[string][]string{}
	for _, g := range grants {
		want[g.Audience] = append(want[g.Audience], g.Dev)
	}
	named := map[string]bool{}
	for _, b := range cs.Consents {
		r, err := entry.DecodeConsentRecord(b)
		if err != nil {
			return Round{}, fmt.Errorf("consent: ledger: %w", err)
		}
		named[r.Audience] = true
	}
	for _, a := range slices.Sorted(maps.Keys(named)) {
		if err := s.ensureAudience(ctx, a); err != nil {
			return Round{}, err
		}
	}
	if !s.lastSeen {
		if s.last, s.height, err = s.readSnapshot(ctx); err != nil {
			return Round{}, err
		}
		s.lastSeen = true
	}
	r := Round{Height: s.height, Grants: len(grants), Audiences: len(s.audiences)}
	if maps.EqualFunc(want, s.last, slices.Equal) && s.height > 0 {
		return r, nil
	}
	if err := s.writeSnapshot(ctx, cs.Height, want); err != nil {
		return Round{}, err
	}
	s.last, s.height = want, cs.Height
	r.Height, r.Changed = cs.Height, true
	return r, nil
}

// exec runs a DDL statement of the analysts' schema (ON CLUSTER on a cluster).
func (s *Syncer) exec(ctx context.Context, st string) error {
	q, err := s.cfg.Schema.Statement(clickhouse.Migration{}, st)
	if err != nil {
		return fmt.Errorf("consent: %w", err)
	}
	if err := s.ch.Exec(ctx, q); err != nil {
		return fmt.Errorf("consent: %.80s: %w", q, err)
	}
	return nil
}

// consented is the condition of a view: the device is in force for audience in the newest
// snapshot.
func (s *Syncer) consented(audience string) string {
	db := s.cfg.Schema.Database
	return fmt.Sprintf("device_id IN (SELECT device_id FROM %s.consent_state WHERE audience = '%s' AND height = (SELECT max(height) FROM %s.consent_state))", db, audience, db)
}

// ensureViews creates the views database, once the first audience needs it, after checking
// that the server knows the cluster the audience tables read through.
func (s *Syncer) ensureViews(ctx context.Context) error {
	if len(s.audiences) > 0 {
		return nil
	}
	var n uint64
	if err := s.ch.QueryRow(ctx, "SELECT count() FROM system.clusters WHERE cluster = ?", s.cfg.Through).Scan(&n); err != nil {
		return fmt.Errorf("consent: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("consent: clickhouse.consent_cluster: the server defines no cluster %q (remote_servers), through which the audiences' tables read the consented rows: define it (one shard, this server, as a user that reads %s) or name another", s.cfg.Through, s.cfg.Schema.Database)
	}
	return s.exec(ctx, "CREATE DATABASE IF NOT EXISTS "+ViewsDatabase(s.cfg.Schema.Database))
}

// ensureAudience creates an audience's views and its database of tables that read them
// through cfg.Through.
func (s *Syncer) ensureAudience(ctx context.Context, audience string) error {
	if s.audiences[audience] {
		return nil
	}
	if !entry.ValidAudience(audience) {
		return fmt.Errorf("consent: audience %q from the ledger is not a valid name", audience)
	}
	if err := s.ensureViews(ctx); err != nil {
		return err
	}
	db, views, adb := s.cfg.Schema.Database, ViewsDatabase(s.cfg.Schema.Database), AudienceDatabase(s.cfg.Schema.Database, audience)
	if err := s.exec(ctx, "CREATE DATABASE IF NOT EXISTS "+adb); err != nil {
		return err
	}
	for _, t := range Tables {
		view := t + "__" + audience
		if err := s.exec(ctx, fmt.Sprintf("CREATE VIEW IF NOT EXISTS %s.%s AS SELECT * FROM %s.%s WHERE %s", views, view, db, t, s.consented(audience))); err != nil {
			return err
		}
		if err := s.exec(ctx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s AS %s.%s ENGINE = Distributed(%s, %s, %s)", adb, t, db, t, s.cfg.Through, views, view)); err != nil {
			return err
		}
	}
	s.audiences[audience] = true
	return nil
}

// readSnapshot is the newest snapshot in ClickHouse and its height (0: none).
func (s *Syncer) readSnapshot(ctx context.Context) (map[string][]string, uint64, error) {
	db := s.cfg.Schema.Database
	rows, err := s.ch.Query(ctx, fmt.Sprintf("SELECT height, audience, device_id FROM %s.consent_state WHERE height = (SELECT max(height) FROM %s.consent_state) ORDER BY audience, device_id", db, db))
	if err != nil {
		return nil, 0, fmt.Errorf("consent: read the snapshot: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	var height uint64
	for rows.Next() {
		var a, d string
		if err := rows.Scan(&height, &a, &d); err != nil {
			return nil, 0, fmt.Errorf("consent: read the snapshot: %w", err)
		}
		if a != "" {
			out[a] = append(out[a], d)
		}
	}
	return out, height, rows.Err()
}

// writeSnapshot inserts the consents in force at height as one block (so that a view sees
// all of it or none), then deletes the older snapshots.
func (s *Syncer) writeSnapshot(ctx context.Context, height uint64, grants map[string][]string) error {
	db := s.cfg.Schema.Database
	b, err := s.ch.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.consent_state (height, audience, device_id)", db))
	if err != nil {
		return fmt.Errorf("consent: write the snapshot: %w", err)
	}
	errs := []error{b.Append(height, "", "")}
	for _, a := range slices.Sorted(maps.Keys(grants)) {
		for _, d := range grants[a] {
			errs = append(errs, b.Append(height, a, d))
		}
	}
	if err := errors.Join(append(errs, b.Send())...); err != nil {
		return fmt.Errorf("consent: write the snapshot of height %d: %w", height, err)
	}
	if err := s.exec(ctx, fmt.Sprintf("ALTER TABLE %s.consent_state DELETE WHERE height < %d", db, height)); err != nil {
		s.log.Warn("consent: cannot delete older snapshots (the views read the newest one)", "err", err)
	}
	return nil
}

// UserXML is a users.d file (ClickHouse users configuration) for an analyst of an audience:
// user name, the SHA-256 (hex) of the password, the audience's database alone, read only, and
// prefer_localhost_replica 0 so that the audience tables always read through the cluster's
// connection (with 1, the server would read the views as the analyst and refuse: access to the
// views database is denied, so the setting can only fail closed).
func UserXML(db, audience, user, passwordSHA256 string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<?xml version=\"1.0\"?>\n<!-- anchorline: analyst %s of audience %s (database %s) -->\n<yandex>\n", user, audience, AudienceDatabase(db, audience))
	fmt.Fprintf(&b, "    <profiles>\n        <anchorline_analyst>\n            <readonly>1</readonly>\n            <prefer_localhost_replica>0</prefer_localhost_replica>\n        </anchorline_analyst>\n    </profiles>\n")
	fmt.Fprintf(&b, "    <users>\n        <%s>\n            <password_sha256_hex>%s</password_sha256_hex>\n            <networks><ip>::/0</ip></networks>\n", user, passwordSHA256)
	fmt.Fprintf(&b, "            <profile>anchorline_analyst</profile>\n            <quota>default</quota>\n            <allow_databases>\n                <database>%s</database>\n            </allow_databases>\n        </%s>\n    </users>\n</yandex>\n", AudienceDatabase(db, audience), user)
	return b.String()
}
