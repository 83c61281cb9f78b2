package reading

import (
	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Ed25519Rules returns Anchorline's Ed25519 verification rules: ZIP-215 (the Zcash rules, also
// CometBFT's). They are the rules batch verification can apply, so ingest (batches), single
// verification and the offline verifier accept exactly the same signatures. They accept some
// signatures Go's crypto/ed25519 refuses (non-canonical or small-order points, which an honest
// signer never produces); testdata/zip215.json holds the vectors that tell the rule sets apart.
func Ed25519Rules() *voi.Options { return &voi.Options{Verify: voi.VerifyOptionsZIP_215} }

// VerifyEd25519 verifies an Ed25519 signature under Ed25519Rules.
func VerifyEd25519(pub, msg, sig []byte) bool {
	if len(pub) != voi.PublicKeySize {
		return false
	}
	return voi.VerifyWithOptions(voi.PublicKey(pub), msg, sig, Ed25519Rules())
}
