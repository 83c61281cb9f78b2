// Package rule is the automation contract (schemas/ledger.md "rule", schemas/rule.md): a rule's
// fields as the ledger commits them, its condition in CEL over one reading and a per-device
// window, and the pure, deterministic evaluation (edge-triggered, with optional hysteresis) that
// both the pipeline's rules stage and the offline verifier run. It does no I/O and reads no
// clock: the same rule over the same readings gives the same decisions everywhere.
package rule
