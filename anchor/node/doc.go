// Package node runs a CometBFT node with the Anchorline ledger app in-process. Start runs a
// single validator for `anchorline dev` and tests: it creates its home folder (keys, genesis
// with the admin keys) on first start and resumes from it afterwards. InitNetwork writes the
// homes of a validator network (keys, one genesis, config.toml with persistent_peers) and
// StartHome runs one validator of it from its home and config.toml. Trust exports what
// auditors pin: the chain id and the validator set.
package node
