package stack

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoAdminKey means the admin key file does not exist: `anchorline dev` creates one under
// data_dir on first start; other setups point ledger.admin_key at theirs.
var ErrNoAdminKey = errors.New("admin key not found")

// LoadAdminKey reads a hex Ed25519 seed from path.
func LoadAdminKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s: start `anchorline dev` once (it creates data_dir/admin.key) or set ledger.admin_key", ErrNoAdminKey, path)
	}
	if err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("admin key %s: want 32 bytes of hex (an Ed25519 seed)", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadOrCreateAdminKey reads the admin key at path, creating it (mode 0600) if missing.
func LoadOrCreateAdminKey(path string) (ed25519.PrivateKey, error) {
	k, err := LoadAdminKey(path)
	if !errors.Is(err, ErrNoAdminKey) {
		return k, err
	}
	_, k, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(k.Seed())+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	return k, nil
}
