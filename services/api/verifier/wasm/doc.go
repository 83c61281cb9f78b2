//go:build js && wasm

// Command wasm is the browser verifier: built with GOOS=js GOARCH=wasm (go generate in the
// parent package), it gives the /verify page the function anchorline.verify(bundle, trust),
// which runs proof.Verify, the code `anchorline verify` runs, and returns its report.
package main
