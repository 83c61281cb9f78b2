package stream

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// golden is the record of testdata/batch_record.json.
var golden = BatchRecord{
	ID:      "0189a3f2b1c00123456789abcdef0011",
	Root:    "5f1c3e0a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e",
	Size:    1000,
	TSMin:   1_700_000_000_000,
	TSMax:   1_700_000_004_999,
	Created: 1_700_000_005_123,
	Worker:  "ingest-1",
}

func readGolden(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "batch_record.json"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b, []byte("\n"))
}

// TestBatchRecordGolden pins the encoding: records already stored in BATCHES must decode, and
// a record encoded today must be what yesterday's ingest published.
func TestBatchRecordGolden(t *testing.T) {
	got, err := json.Marshal(golden)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "batch_record.json")
	if *update {
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readGolden(t)
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
	var back BatchRecord
	if err := json.Unmarshal(want, &back); err != nil || back != golden {
		t.Fatalf("golden decodes as %+v, %v; want %+v", back, err, golden)
	}
}

// TestBatchRecordCompatible checks the record against the two types it replaces: the one
// ingest published (Size int) and the one the anchor service read (id, root, size only).
func TestBatchRecordCompatible(t *testing.T) {
	type published struct {
		ID      string `json:"id"`
		Root    string `json:"root"`
		Size    int    `json:"size"`
		TSMin   uint64 `json:"ts_min"`
		TSMax   uint64 `json:"ts_max"`
		Created int64  `json:"created_ms"`
		Worker  string `json:"worker"`
	}
	old, err := json.Marshal(published{golden.ID, golden.Root, int(golden.Size), golden.TSMin, golden.TSMax, golden.Created, golden.Worker})
	if err != nil {
		t.Fatal(err)
	}
	if want := readGolden(t); !bytes.Equal(old, want) {
		t.Fatalf("the golden file is not what ingest published:\n old %s\nfile %s", old, want)
	}
	type anchorView struct {
		ID   string `json:"id"`
		Root string `json:"root"`
		Size uint64 `json:"size"`
	}
	var a anchorView
	if err := json.Unmarshal(old, &a); err != nil || a.ID != golden.ID || a.Root != golden.Root || a.Size != golden.Size {
		t.Fatalf("the anchor service's view: %+v, %v", a, err)
	}
	// A record with fields this version does not know (a newer ingest) still decodes.
	var r BatchRecord
	if err := json.Unmarshal([]byte(`{"id":"00","root":"11","size":3,"later":true}`), &r); err != nil || r.Size != 3 {
		t.Fatalf("record with an unknown field: %+v, %v", r, err)
	}
}

func TestNames(t *testing.T) {
	for name, got := range map[string]string{
		"Readings": Readings, "ReadingsSubjects": ReadingsSubjects, "IngestConsumer": IngestConsumer,
		"Batches": Batches, "BatchesSubject": BatchesSubject, "AnchorConsumer": AnchorConsumer,
	} {
		want := map[string]string{ // docs/architecture.md, "Runtime names"; deployments depend on them
			"Readings": "READINGS", "ReadingsSubjects": "iot.readings.>", "IngestConsumer": "ingest",
			"Batches": "BATCHES", "BatchesSubject": "anchorline.batches", "AnchorConsumer": "anchor",
		}[name]
		if got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestNewID(t *testing.T) {
	id := NewID(time.UnixMilli(1_700_000_000_000))
	if got := id[:6]; !bytes.Equal(got, []byte{0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00}) {
		t.Fatalf("time prefix %x, want 018bcfe56800", got)
	}
	if a, b := NewID(time.UnixMilli(1000)), NewID(time.UnixMilli(2000)); string(a[:6]) >= string(b[:6]) {
		t.Fatalf("ids not time-ordered: %x then %x", a, b)
	}
	if a, b := NewID(time.UnixMilli(1)), NewID(time.UnixMilli(1)); a == b {
		t.Fatalf("two ids of the same millisecond are equal: %x", a)
	}
}
