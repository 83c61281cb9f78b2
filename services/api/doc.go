// Package api is Anchorline's HTTP API (DESIGN 2.6): readings, batches, anchors, devices and
// proof bundles for analysts and auditors, device registration for operators, and the health,
// readiness and metrics endpoints. It also holds the Client that the CLI's client commands use.
package api
