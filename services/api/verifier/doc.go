// Package verifier serves the browser verifier: the /verify page, where anyone checks a proof
// bundle against a trust file (their own, or the server's published one) in their own browser,
// with anchor/proof's Verify compiled to WebAssembly (./wasm), the code `anchorline verify`
// runs; the files never leave the browser. The WebAssembly is built from this repository's
// source by `go generate` (./internal/wasmbuild) into dist/, which the package embeds; a binary
// built without it answers /verify with a page that says how to build it.
package verifier
