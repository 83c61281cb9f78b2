//go:build race

package bundle

// Under the race detector, which makes each parse twenty times slower, every tenth change
// (the run is for the chunks' goroutines; the run without -race tries every change).
func init() { mutationStride = 10 }
