//go:build race

package proof

// byteStride is the step between the bytes TestRangeEveryByteMatters changes: under the race
// detector, which makes each verification ten times slower, every seventh byte (the run is
// for the verifier's goroutines; the full run without -race covers every byte).
const byteStride = 7
