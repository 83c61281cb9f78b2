package reading

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
)

// Alg names a signature algorithm as it appears on the command line, in the ledger registry
// and in proof bundles.
type Alg string

// The algorithms a device may sign with.
const (
	Ed25519 Alg = "ed25519" // COSE alg -8 (EdDSA) with Ed25519
	ES256   Alg = "es256"   // COSE alg -7, ECDSA P-256 with SHA-256
)

// ErrBadKey marks a public or private key that cannot be used with its algorithm.
var ErrBadKey = errors.New("reading: bad key")

// ParseAlg parses "ed25519" or "es256" (case-insensitive).
func ParseAlg(s string) (Alg, error) {
	switch a := Alg(strings.ToLower(s)); a {
	case Ed25519, ES256:
		return a, nil
	}
	return "", fmt.Errorf("%w: unknown algorithm %q (use ed25519 or es256)", ErrUnsupportedAlg, s)
}

// PublicKey is a device's public key: Ed25519, 32 bytes; ES256, the SEC1 uncompressed point
// (65 bytes, 04 || X || Y).
type PublicKey struct {
	Alg Alg
	Key []byte
}

// ParsePublicKey checks key for alg and returns it in canonical form: an ES256 key given
// compressed (33 bytes) is returned uncompressed.
func ParsePublicKey(alg Alg, key []byte) (PublicKey, error) {
	switch alg {
	case Ed25519:
		if len(key) != ed25519.PublicKeySize {
			return PublicKey{}, fmt.Errorf("%w: ed25519 public key is %d bytes, want 32", ErrBadKey, len(key))
		}
		return PublicKey{Alg: alg, Key: append([]byte(nil), key...)}, nil
	case ES256:
		pk, err := parseP256(key)
		if err != nil {
			return PublicKey{}, err
		}
		raw, err := pk.Bytes()
		if err != nil {
			return PublicKey{}, fmt.Errorf("%w: %w", ErrBadKey, err)
		}
		return PublicKey{Alg: alg, Key: raw}, nil
	}
	return PublicKey{}, fmt.Errorf("%w: %q", ErrUnsupportedAlg, alg)
}

func parseP256(key []byte) (*ecdsa.PublicKey, error) {
	switch len(key) {
	case 65:
		pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), key)
		if err != nil {
			return nil, fmt.Errorf("%w: es256 public key: %w", ErrBadKey, err)
		}
		return pk, nil
	case 33:
		x, y := elliptic.UnmarshalCompressed(elliptic.P256(), key)
		if x == nil {
			return nil, fmt.Errorf("%w: es256 compressed public key is not on P-256", ErrBadKey)
		}
		// Through the uncompressed form: crypto/ecdsa has no parser for the compressed one.
		full := make([]byte, 65)
		full[0] = 4
		x.FillBytes(full[1:33])
		y.FillBytes(full[33:])
		pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), full)
		if err != nil {
			return nil, fmt.Errorf("%w: es256 public key: %w", ErrBadKey, err)
		}
		return pk, nil
	}
	return nil, fmt.Errorf("%w: es256 public key is %d bytes, want 65 (uncompressed) or 33 (compressed)", ErrBadKey, len(key))
}

// String is the hex form used on the command line and in bundles.
func (k PublicKey) String() string { return hex.EncodeToString(k.Key) }

// Verify checks a signature made by PrivateKey.Sign over msg. An ES256 signature must carry s
// in its low form (at most n/2, as Sign makes it), so that a signed message has exactly one
// valid encoding: ledger entries are identified by their bytes.
func (k PublicKey) Verify(msg, sig []byte) error { return k.verify(msg, sig, true) }

func (k PublicKey) verify(msg, sig []byte, lowS bool) error {
	switch k.Alg {
	case Ed25519:
		if len(sig) != ed25519.SignatureSize {
			return fmt.Errorf("%w: ed25519 signature is %d bytes, want 64", ErrBadSignature, len(sig))
		}
		if len(k.Key) != ed25519.PublicKeySize || !ed25519.Verify(ed25519.PublicKey(k.Key), msg, sig) {
			return ErrBadSignature
		}
		return nil
	case ES256:
		key, err := parseP256(k.Key)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadSignature, err)
		}
		if len(sig) != 64 {
			return fmt.Errorf("%w: es256 signature is %d bytes, want 64", ErrBadSignature, len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if lowS && s.Cmp(halfOrderP256) > 0 {
			return fmt.Errorf("%w: es256 signature's s is not in its low form", ErrBadSignature)
		}
		h := sha256.Sum256(msg)
		if !ecdsa.Verify(key, h[:], r, s) {
			return ErrBadSignature
		}
		return nil
	}
	return fmt.Errorf("%w: %q", ErrUnsupportedAlg, k.Alg)
}

// halfOrderP256 is n/2 for P-256's group order n.
var halfOrderP256 = new(big.Int).Rsh(elliptic.P256().Params().N, 1)

// PrivateKey is a device's signing key.
type PrivateKey struct {
	alg Alg
	ed  ed25519.PrivateKey
	ec  *ecdsa.PrivateKey
}

// GenerateKey makes a new key for alg from crypto/rand.
func GenerateKey(alg Alg) (PrivateKey, error) {
	switch alg {
	case Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return PrivateKey{}, fmt.Errorf("reading: generate ed25519 key: %w", err)
		}
		return PrivateKey{alg: alg, ed: priv}, nil
	case ES256:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return PrivateKey{}, fmt.Errorf("reading: generate es256 key: %w", err)
		}
		return PrivateKey{alg: alg, ec: priv}, nil
	}
	return PrivateKey{}, fmt.Errorf("%w: %q", ErrUnsupportedAlg, alg)
}

// NewEd25519Key wraps an existing Ed25519 private key.
func NewEd25519Key(priv ed25519.PrivateKey) PrivateKey { return PrivateKey{alg: Ed25519, ed: priv} }

// NewES256Key wraps an existing P-256 private key.
func NewES256Key(priv *ecdsa.PrivateKey) PrivateKey { return PrivateKey{alg: ES256, ec: priv} }

// Alg is the key's algorithm.
func (k PrivateKey) Alg() Alg { return k.alg }

// Public returns the public key in canonical form.
func (k PrivateKey) Public() PublicKey {
	switch k.alg {
	case Ed25519:
		return PublicKey{Alg: Ed25519, Key: Ed25519Public(k.ed)}
	case ES256:
		raw, _ := k.ec.PublicKey.Bytes() // a generated or parsed P-256 key always encodes
		return PublicKey{Alg: ES256, Key: raw}
	}
	return PublicKey{}
}

// Sign signs msg: Ed25519, or ES256 (ECDSA P-256 over SHA-256(msg), r || s of 32 bytes each
// as in COSE, s in its low form).
func (k PrivateKey) Sign(msg []byte) ([]byte, error) {
	switch k.alg {
	case Ed25519:
		return ed25519.Sign(k.ed, msg), nil
	case ES256:
		h := sha256.Sum256(msg)
		r, s, err := ecdsa.Sign(rand.Reader, k.ec, h[:])
		if err != nil {
			return nil, fmt.Errorf("reading: es256 sign: %w", err)
		}
		if s.Cmp(halfOrderP256) > 0 {
			s.Sub(elliptic.P256().Params().N, s)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedAlg, k.alg)
}

// bytes is the private key as stored in key files: the Ed25519 seed (32 bytes) or the P-256
// scalar (32 bytes).
func (k PrivateKey) bytes() ([]byte, error) {
	switch k.alg {
	case Ed25519:
		return k.ed.Seed(), nil
	case ES256:
		return k.ec.Bytes()
	}
	return nil, fmt.Errorf("%w: empty private key", ErrBadKey)
}

func parsePrivateKey(alg Alg, raw []byte) (PrivateKey, error) {
	switch alg {
	case Ed25519:
		if len(raw) != ed25519.SeedSize {
			return PrivateKey{}, fmt.Errorf("%w: ed25519 seed is %d bytes, want 32", ErrBadKey, len(raw))
		}
		return NewEd25519Key(ed25519.NewKeyFromSeed(raw)), nil
	case ES256:
		priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw)
		if err != nil {
			return PrivateKey{}, fmt.Errorf("%w: es256 private key: %w", ErrBadKey, err)
		}
		return NewES256Key(priv), nil
	}
	return PrivateKey{}, fmt.Errorf("%w: %q", ErrUnsupportedAlg, alg)
}

// KeyFile is a device's identity on disk (JSON, mode 0600): what `anchorline device keygen`
// writes and `device register`/`device publish` read.
type KeyFile struct {
	ID         string `json:"id"`
	Alg        Alg    `json:"alg"`
	PrivateKey string `json:"private_key"` // hex: Ed25519 seed or P-256 scalar
	PublicKey  string `json:"public_key"`  // hex, canonical form
}

// NewKeyFile describes key as the key of device id.
func NewKeyFile(id string, key PrivateKey) (KeyFile, error) {
	if !ValidDeviceID(id) {
		return KeyFile{}, fmt.Errorf("%w: device id %q must match %s", ErrBadPayload, id, deviceIDPattern)
	}
	raw, err := key.bytes()
	if err != nil {
		return KeyFile{}, err
	}
	return KeyFile{ID: id, Alg: key.alg, PrivateKey: hex.EncodeToString(raw), PublicKey: key.Public().String()}, nil
}

// Key decodes the private key and checks it against the public key.
func (f KeyFile) Key() (PrivateKey, error) {
	raw, err := hex.DecodeString(f.PrivateKey)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("%w: private_key is not hex: %w", ErrBadKey, err)
	}
	k, err := parsePrivateKey(f.Alg, raw)
	if err != nil {
		return PrivateKey{}, err
	}
	if f.PublicKey != "" && k.Public().String() != strings.ToLower(f.PublicKey) {
		return PrivateKey{}, fmt.Errorf("%w: public_key does not belong to private_key", ErrBadKey)
	}
	return k, nil
}

// WriteKeyFile writes f to path with mode 0600, refusing to overwrite an existing file.
func WriteKeyFile(path string, f KeyFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("reading: encode key file: %w", err)
	}
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("reading: write key file: %w", err)
	}
	if _, err := fh.Write(append(b, '\n')); err != nil {
		fh.Close()
		return fmt.Errorf("reading: write key file %s: %w", path, err)
	}
	return fh.Close()
}

// ReadKeyFile reads and checks a key file.
func ReadKeyFile(path string) (KeyFile, PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return KeyFile{}, PrivateKey{}, fmt.Errorf("reading: key file: %w", err)
	}
	var f KeyFile
	if err := json.Unmarshal(b, &f); err != nil {
		return KeyFile{}, PrivateKey{}, fmt.Errorf("reading: key file %s: %w", path, err)
	}
	if !ValidDeviceID(f.ID) {
		return KeyFile{}, PrivateKey{}, fmt.Errorf("%w: key file %s: id %q must match %s", ErrBadKey, path, f.ID, deviceIDPattern)
	}
	k, err := f.Key()
	if err != nil {
		return KeyFile{}, PrivateKey{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return f, k, nil
}

// Ed25519Public returns the public half of an Ed25519 private key (its last 32 bytes, as
// crypto/ed25519 lays keys out) without asserting the type of Public's crypto.PublicKey; nil
// for a key of the wrong length.
func Ed25519Public(k ed25519.PrivateKey) ed25519.PublicKey {
	if len(k) != ed25519.PrivateKeySize {
		return nil
	}
	return append(ed25519.PublicKey(nil), k[ed25519.SeedSize:]...)
}
