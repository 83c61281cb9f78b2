// Command anchorline is the one binary of Anchorline: the services (dev, ingest, anchor,
// ledger, api, migrate), the device tools (keygen, register, revoke, publish, simulate), and the
// auditor's commands (proof, verify, trust export, status).
package main
