// Package natstest starts a real embedded NATS server with JetStream (file storage in a test's
// temporary folder) for tests, and connects to it.
package natstest
