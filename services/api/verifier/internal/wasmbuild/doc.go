// Command wasmbuild builds the browser verifier (../../wasm) from this repository's source
// for GOOS=js GOARCH=wasm and writes what the verifier package embeds: verify.wasm.gz and the
// wasm_exec.js of the Go that built it. `go generate ./services/api/verifier` runs it; the
// build is reproducible (-trimpath, no VCS stamp), so anyone can rebuild and compare hashes.
package main
