// Package retry is Anchorline's one policy for retrying a failed dependency (ClickHouse, NATS,
// the ledger): exponential backoff with jitter, a cap on each wait, and an optional deadline
// after which the last error is returned wrapped in ErrGaveUp. The policy is a value; the
// backoff itself is github.com/cenkalti/backoff/v5.
package retry
