//go:build !race

package proof

// byteStride is the step between the bytes TestRangeEveryByteMatters changes: every byte.
const byteStride = 1
