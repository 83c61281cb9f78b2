// Package ingest is the ingest stage: it pulls readings from the shared durable consumer,
// verifies them, checks device chains (pipeline/chain), writes good readings in batches and bad
// ones to the quarantine, publishes each batch record for anchoring (and, with a RulesFeed, the
// batch's verified readings for the rules stage, in batch order), and acknowledges a message
// only after all of that is durable (a chain suspect's, only once its link is settled).
package ingest
