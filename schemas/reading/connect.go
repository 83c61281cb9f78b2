package reading

import (
	"encoding/base64"
	"errors"
	"fmt"
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
	sig, err := key.Sign(connectMessage(nonce))
	if err != nil {
		return nil, fmt.Errorf("reading: sign connect proof: %w", err)
	}
	return sig, nil
}

// VerifyConnect checks a connect proof made by SignConnect against a registered key. An
// ES256 proof's s may be in either form (a proof answers a fresh nonce, so its encoding need
// not be unique).
func VerifyConnect(pk PublicKey, nonce, sig []byte) error {
	if err := pk.verify(connectMessage(nonce), sig, false); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConnectProof, err)
	}
	return nil
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
