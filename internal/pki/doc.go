// Package pki makes the private certificate authority and certificates that `anchorline dev`
// serves TLS with (under data_dir/tls), and the client TLS configurations that trust a CA file.
// Deployments bring their own certificates; only the client side applies to them.
package pki
