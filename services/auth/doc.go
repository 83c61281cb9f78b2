// Package auth is Anchorline's identity at the broker: the NATS accounts, service credentials
// and permissions of each role (Setup, auth.conf), and the auth callout service that lets a
// device connect only as itself, only while its ledger record is active, and closes its
// connections when it is revoked. The device's side of the handshake is schemas/reading.
package auth
