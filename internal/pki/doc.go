// Package pki makes a private certificate authority and the server certificates it issues
// (Dir.Ensure), and the client TLS configurations that trust a CA file. `anchorline dev` and
// `anchorline cluster up` keep theirs under their data directory; `anchorline tls init` makes
// them for a deployment (deployments/compose, deployments/kubernetes).
package pki
