// Package bundle holds the Go types of the proof bundle (DESIGN 2.4) and of the auditor's trust
// file, with their one canonical JSON encoding: Parse refuses any other, so that changing a
// single byte of a bundle is caught before any hash is checked. Field by field: ../proof.md.
package bundle
