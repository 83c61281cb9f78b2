package main

import (
	"slices"
	"strings"
	"testing"
)

func TestWorkerCounts(t *testing.T) {
	got, err := workerCounts("1, 2,4")
	if err != nil || !slices.Equal(got, []int{1, 2, 4}) {
		t.Fatalf("1, 2,4: %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "two", "1,,2", "65"} {
		if _, err := workerCounts(bad); err == nil || exitCode(err) != exitBadInput || !strings.Contains(err.Error(), "--workers") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
