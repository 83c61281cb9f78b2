// Package node runs a CometBFT node with the Anchorline ledger app in-process: a single validator
// for `anchorline dev` and tests, or one validator of a network. It creates the home folder (keys,
// genesis with the admin keys) on first start and resumes from it afterwards; Trust exports what
// auditors pin: the chain id and the validator set.
package node
