// Package reading is the wire format of a device reading (DESIGN 2.1): a tagged COSE_Sign1
// message signed with Ed25519 or ES256 whose payload is a CBOR map of device id, sequence
// number, device time, metrics, tags and the leaf hash of the device's previous reading.
//
// Device makers use Sign, GenerateKey, key files and Device (the Go device SDK); ingest and
// auditors use Decode and Message.Verify. Decode accepts any valid CBOR encoding of the
// values, because the exact bytes received are what gets hashed.
package reading
