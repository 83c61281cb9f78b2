package connect

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/anchorline/anchorline/schemas/reading"
)

// KeyName is what a device puts in the CONNECT's nkey field: for Ed25519 the NATS user
// nkey of its registered key ("U..."), for ES256, which NATS nkeys cannot encode, "ES256".
// The broker checks it against the registered key; it names the key, it proves nothing.
func KeyName(pk reading.PublicKey) (string, error) {
	switch pk.Alg {
	case reading.Ed25519:
		b, err := nkeys.Encode(nkeys.PrefixByteUser, pk.Key)
		if err != nil {
			return "", fmt.Errorf("%w: %w", reading.ErrBadKey, err)
		}
		return string(b), nil
	case reading.ES256:
		return "ES256", nil
	}
	return "", fmt.Errorf("%w: %q", reading.ErrUnsupportedAlg, pk.Alg)
}

// Options are the nats.go options a device connects with: its id as the user, its
// key's name and a connect proof over the server's nonce, and an inbox prefix of its own, so that
// JetStream's acknowledgements of its publishes reach it under the broker's permissions.
func Options(device string, key reading.PrivateKey) ([]nats.Option, error) {
	name, err := KeyName(key.Public())
	if err != nil {
		return nil, err
	}
	return []nats.Option{
		nats.UserInfo(device, ""),
		nats.Nkey(name, func(nonce []byte) ([]byte, error) { return reading.SignConnect(key, nonce) }),
		nats.CustomInboxPrefix(reading.InboxPrefix(device)),
	}, nil
}
