package api

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ErrUnauthorized is what the Client returns for a 401: the endpoint needs a token (http.token)
// that the server's tokens file (http.tokens) lists.
var ErrUnauthorized = errors.New("api: a valid token is required")

// ErrNoConsent is what the Client returns for a 403: the token's audience has no consent in
// force for the device (schemas/ledger.md "consent").
var ErrNoConsent = errors.New("api: no consent in force for the token's audience")

// audienceRE is what an audience name may be: an analyst group or a purpose.
var audienceRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Tokens are the API's client tokens: who may read raw readings and proofs. The file holds one
// token per line, `<audience> <sha256 of the token, hex>`; `#` starts a comment. Only hashes
// are stored, so the file reveals no token. It is read again when it changes (checked at most
// once a second), so tokens are added and removed without a restart.
type Tokens struct {
	path string

	mu      sync.Mutex
	checked time.Time
	mod     time.Time
	size    int64
	byHash  map[[32]byte]string // sha256 -> audience
	loadErr error
}

// LoadTokens reads a tokens file; an error names the file and the line.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.reload(time.Now()); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Tokens) reload(now time.Time) error {
	st, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("http.tokens %s: %w", t.path, err)
	}
	t.checked = now
	if t.byHash != nil && st.ModTime().Equal(t.mod) && st.Size() == t.size {
		return nil
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("http.tokens %s: %w", t.path, err)
	}
	m, err := parseTokens(b)
	if err != nil {
		return fmt.Errorf("http.tokens %s: %w", t.path, err)
	}
	t.byHash, t.mod, t.size = m, st.ModTime(), st.Size()
	return nil
}

func parseTokens(b []byte) (map[[32]byte]string, error) {
	m := map[[32]byte]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 || !audienceRE.MatchString(f[0]) {
			return nil, fmt.Errorf("line %d: want `<audience> <sha256 hex>`, audience of A-Z, a-z, 0-9, '.', '_', '-'", n)
		}
		h, err := hex.DecodeString(f[1])
		if err != nil || len(h) != 32 {
			return nil, fmt.Errorf("line %d: %q is not a SHA-256 in hex (64 characters)", n, f[1])
		}
		m[[32]byte(h)] = f[0]
	}
	return m, sc.Err()
}

// Audience returns the audience of a token, or false if the file does not list it. If the file
// became unreadable since, the tokens last read stay in force and the error is returned too.
func (t *Tokens) Audience(token string) (string, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); now.Sub(t.checked) >= time.Second {
		t.loadErr = t.reload(now)
	}
	h := sha256.Sum256([]byte(token))
	for hash, aud := range t.byHash {
		if subtle.ConstantTimeCompare(hash[:], h[:]) == 1 {
			return aud, true, t.loadErr
		}
	}
	return "", false, t.loadErr
}

// NewToken makes a token for an audience and returns it with the tokens file line that admits
// it.
func NewToken(audience string) (token, line string, err error) {
	if !audienceRE.MatchString(audience) {
		return "", "", fmt.Errorf("audience %q: want 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'", audience)
	}
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	token = "alt_" + base64.RawURLEncoding.EncodeToString(b[:])
	h := sha256.Sum256([]byte(token))
	return token, audience + " " + hex.EncodeToString(h[:]), nil
}
