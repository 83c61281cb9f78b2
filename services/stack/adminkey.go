package stack

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anchorline/anchorline/anchor/ledger"
	"github.com/anchorline/anchorline/schemas/entry"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

// ErrNoAdminKey means the admin key file does not exist: `anchorline dev` creates one under
// data_dir on first start; other setups point ledger.admin_key at theirs.
var ErrNoAdminKey = errors.New("admin key not found")

// errNoAnchorKey: the anchoring key file does not exist (LoadOrCreateAnchorKey creates it).
var errNoAnchorKey = errors.New("anchor key not found")

// LoadAdminKey reads a hex Ed25519 seed from path.
func LoadAdminKey(path string) (ed25519.PrivateKey, error) {
	return loadKey(path, "admin key", ErrNoAdminKey, "start `anchorline dev` once (it creates data_dir/admin.key) or set ledger.admin_key")
}

// LoadOrCreateAdminKey reads the admin key at path, creating it (mode 0600) if missing.
func LoadOrCreateAdminKey(path string) (ed25519.PrivateKey, error) {
	return loadOrCreateKey(path, "admin key", ErrNoAdminKey)
}

// LoadOrCreateAnchorKey reads the anchoring key (anchor.key, a hex Ed25519 seed) at path,
// creating it (mode 0600) if missing. A new key signs anchors the ledger accepts only once
// its genesis or an admin's anchor_key entry authorises it (AuthoriseAnchorKey).
func LoadOrCreateAnchorKey(path string) (ed25519.PrivateKey, error) {
	return loadOrCreateKey(path, "anchor key", errNoAnchorKey)
}

// ErrNoRulesKey: the rules stage's key file does not exist (dev creates it).
var ErrNoRulesKey = errors.New("rules key not found")

// LoadRulesKey reads the rules stage's key (rules.key), which signs commands as the commander.
func LoadRulesKey(path string) (ed25519.PrivateKey, error) {
	return loadKey(path, "rules key", ErrNoRulesKey, "`anchorline ledger keygen --out FILE` makes one; register its public key as the commander (anchorline device register --id rules --alg ed25519 --pubkey HEX) and set rules.key")
}

// LoadOrCreateRulesKey reads the rules stage's key at path, creating it (mode 0600) if missing.
func LoadOrCreateRulesKey(path string) (ed25519.PrivateKey, error) {
	return loadOrCreateKey(path, "rules key", ErrNoRulesKey)
}

// RegisterCommander makes sure the ledger's registry holds the commander (rule.Commander)
// with key, active: if it does not, it registers it, signed by admin (revoking another key
// first). `anchorline dev` does this for its rules key.
func RegisterCommander(ctx context.Context, l *ledger.Client, admin ed25519.PrivateKey, key ed25519.PublicKey, log *slog.Logger) error {
	p, err := l.Device(ctx, rule.Commander, 0)
	switch {
	case err == nil && p.Record.Status == entry.StatusActive && bytes.Equal(p.Record.Key, key):
		return nil
	case err == nil && p.Record.Status == entry.StatusActive:
		rev, err := entry.NewRevoke(admin, rule.Commander, time.Now())
		if err != nil {
			return err
		}
		if _, err := l.Submit(ctx, rev); err != nil {
			return fmt.Errorf("commander: revoke the old key: %w", err)
		}
	case err != nil && !errors.Is(err, ledger.ErrUnknownDevice):
		return fmt.Errorf("commander: %w", err)
	}
	reg, err := entry.NewRegister(admin, rule.Commander, reading.PublicKey{Alg: reading.Ed25519, Key: key}, time.Now())
	if err != nil {
		return err
	}
	rc, err := l.Submit(ctx, reg)
	if err != nil {
		return fmt.Errorf("commander: register %s: %w", rule.Commander, err)
	}
	log.InfoContext(ctx, "registered the rules stage's commander", "device", rule.Commander, "key", hex.EncodeToString(key), "height", rc.Height)
	return nil
}

// loadKey reads a hex Ed25519 seed file; a missing file is notFound.
func loadKey(path, what string, notFound error, hint string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s: %s", notFound, path, hint)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s %s: want 32 bytes of hex (an Ed25519 seed)", what, path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func loadOrCreateKey(path, what string, notFound error) (ed25519.PrivateKey, error) {
	k, err := loadKey(path, what, notFound, "")
	if !errors.Is(err, notFound) {
		return k, err
	}
	_, k, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(k.Seed())+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return k, nil
}

// AuthoriseAnchorKey makes sure the ledger accepts anchors signed by key: if the committed
// authority does not list it, it commits an anchor_key entry adding it, signed by admin. This
// is how `anchorline dev` keeps a data_dir made before authorised writers working (its
// genesis lists no anchoring keys); the ledger accepts only signed anchors by authorised
// keys from the block after that entry.
func AuthoriseAnchorKey(ctx context.Context, l *ledger.Client, admin ed25519.PrivateKey, key ed25519.PublicKey, log *slog.Logger) error {
	auth, err := l.Authority(ctx)
	if err != nil {
		return fmt.Errorf("anchor key: %w", err)
	}
	if slices.Contains(auth.AnchorKeys, hex.EncodeToString(key)) {
		return nil
	}
	e, err := entry.NewAnchorKey(admin, entry.OpAdd, key, time.Now())
	if err != nil {
		return fmt.Errorf("anchor key: %w", err)
	}
	rc, err := l.Submit(ctx, e)
	if err != nil {
		return fmt.Errorf("anchor key: authorise %x: %w", []byte(key), err)
	}
	log.InfoContext(ctx, "authorised the anchoring key on the ledger", "key", hex.EncodeToString(key), "height", rc.Height)
	return nil
}
