// Package connect is the Go device SDK's connection to the broker: the nats.go options with
// which a device connects as itself (its id, a connect proof by its registered key over the
// server's nonce, an inbox of its own), and the CONNECT's nkey field. The proof itself is
// schemas/reading's (SignConnect, VerifyConnect), which stays free of NATS.
package connect
