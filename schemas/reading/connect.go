package reading

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
)

// How a device proves its identity to the broker (schemas/reading's part of the contract, free
// of NATS itself; the nats.go options and the CONNECT's nkey field are in schemas/reading/connect,
// the broker's part in services/auth). When a device connects, NATS sends it a nonce; the device
// answers with a signature by its registered key over ConnectContext || nonce, and names itself
// in the CONNECT's user field. The context makes a connect proof and a reading's signature two
// different statements: a reading's signed bytes are a COSE Sig_structure, which begins with the
// CBOR array byte 0x84, and a connect proof's begin with "anchorline-", so a server that chooses
// its nonce (a rogue one, say) can never obtain a device's signature over a reading.
const ConnectContext = "anchorline-nats-connect-v1\x00"

// Subjects of a device's own at the broker: it publishes on Subject(id), receives the
// acknowledgements of its publishes under InboxPrefix(id), and commands on CommandsSubject(id).
const (
	InboxSubjectPrefix    = "iot.inbox."
	CommandsSubjectPrefix = "iot.commands."
)

// InboxPrefix is the reply-subject prefix of a device's connection (nats.CustomInboxPrefix).
func InboxPrefix(device string) string { return InboxSubjectPrefix + device }

// CommandsSubject is where commands to a device are published (reserved for later use).
func CommandsSubject(device string) string { return CommandsSubjectPrefix + device }

// ErrBadConnectProof is returned by VerifyConnect for a signature that does not verify.
var ErrBadConnectProof = errors.New("connect proof does not verify")

// SignConnect signs a broker's nonce with a device's key: Ed25519 over ConnectContext ||
// nonce, or ES256 (ECDSA P-256, SHA-256, r || s of 32 bytes each as in COSE) over the same bytes.
func SignConnect(key PrivateKey, nonce []byte) ([]byte, error) {
	msg := connectMessage(nonce)
	switch key.alg {
	case Ed25519:
		return ed25519.Sign(key.ed, msg), nil
	case ES256:
		h := sha256.Sum256(msg)
		r, s, err := ecdsa.Sign(rand.Reader, key.ec, h[:])
		if err != nil {
			return nil, fmt.Errorf("reading: sign connect proof: %w", err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return sig, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedAlg, key.alg)
}

// VerifyConnect checks a connect proof made by SignConnect against a registered key.
func VerifyConnect(pk PublicKey, nonce, sig []byte) error {
	msg := connectMessage(nonce)
	switch pk.Alg {
	case Ed25519:
		if len(pk.Key) != ed25519.PublicKeySize || !ed25519.Verify(ed25519.PublicKey(pk.Key), msg, sig) {
			return ErrBadConnectProof
		}
		return nil
	case ES256:
		key, err := parseP256(pk.Key)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadConnectProof, err)
		}
		if len(sig) != 64 {
			return fmt.Errorf("%w: ES256 proof is %d bytes, want 64", ErrBadConnectProof, len(sig))
		}
		h := sha256.Sum256(msg)
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(key, h[:], r, s) {
			return ErrBadConnectProof
		}
		return nil
	}
	return fmt.Errorf("%w: %q", ErrUnsupportedAlg, pk.Alg)
}

func connectMessage(nonce []byte) []byte {
	return append([]byte(ConnectContext), nonce...)
}

// DecodeConnectSig decodes the CONNECT's sig field (unpadded base64url, as nats.go sends it).
func DecodeConnectSig(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: sig is not unpadded base64url: %w", ErrBadConnectProof, err)
	}
	return b, nil
}
