package write_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/anchorline/anchorline/internal/await"
	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/pipeline/write"
	"github.com/anchorline/anchorline/schemas/reading"
	"github.com/anchorline/anchorline/schemas/rule"
)

var cpuDrop = flag.String("write.drop", "", "tables to drop before BenchmarkServerCPU (experiments)")

var cpuNull = flag.String("write.null", "", "tables BenchmarkServerCPU replaces with Null tables (experiments)")

var cpuReadings = flag.Int("write.readings", 500_000, "readings BenchmarkServerCPU writes (batches of 10,000 from 500 devices)")

// childCPU is the CPU time (user + system) of this process's children, by pid: the private
// ClickHouse server chserver started is one of them.
func childCPU(tb testing.TB) map[int]time.Duration {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	if err != nil {
		tb.Fatal(err)
	}
	out := map[int]time.Duration{}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				continue
			}
			s := string(stat)
			fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
			ut, _ := strconv.ParseInt(fields[11], 10, 64)
			st, _ := strconv.ParseInt(fields[12], 10, 64)
			out[pid] = time.Duration(ut+st) * (time.Second / 100) // USER_HZ
		}
	}
	return out
}

func sumCPU(m map[int]time.Duration) (d time.Duration) {
	for _, v := range m {
		d += v
	}
	return d
}

// benchBatches are -write.readings readings like anchorline bench's: 500 devices, 2 metrics,
// 250-byte raw bytes, device time 10 ms apart per device, in batches of 10,000.
func benchBatches(n int) []*write.Batch {
	var out []*write.Batch
	base := uint64(1_764_000_000_000)
	for start := 0; start < n; start += 10_000 {
		b := &write.Batch{Created: time.Now().Truncate(time.Second), Worker: "w1"}
		_, _ = rand.Read(b.ID[:])
		for i := start; i < min(start+10_000, n); i++ {
			raw := make([]byte, 250)
			_, _ = rand.Read(raw)
			dev := i % 500
			seq := uint64(i/500 + 1)
			b.Readings = append(b.Readings, write.Reading{Device: fmt.Sprintf("bench-%05d", dev), Seq: seq,
				TS: base + seq*10, ReceivedAt: time.Now().Truncate(time.Second), Raw: raw,
				Leaf: sha256.Sum256(raw), Prev: raw[:32], LeafIndex: uint32(i - start),
				Metrics: []reading.Metric{{Name: "temp", Value: 20 + float64(i%100)/10}, {Name: "hum", Value: float64(i % 97)}}})
		}
		out = append(out, b)
	}
	return out
}

// BenchmarkServerCPU writes -write.readings readings in batches of 10,000 and reports the
// ClickHouse server's CPU per reading, for the inserts and for the merges they leave behind
// (waited for until system.merges is empty and every table has merged to few parts).
//
//	go test -run '^$' -bench BenchmarkServerCPU -benchtime 1x ./pipeline/write/
func BenchmarkServerCPU(b *testing.B) {
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		_, db, conn := chserver.NewDatabase(b)
		w := write.New(conn, db)
		for _, t := range strings.Split(*cpuDrop, ",") {
			if t != "" {
				if err := conn.Exec(ctx, "DROP TABLE "+db+"."+t); err != nil {
					b.Fatal(err)
				}
			}
		}
		for _, t := range strings.Split(*cpuNull, ",") {
			if t != "" {
				for _, q := range []string{"RENAME TABLE " + db + "." + t + " TO " + db + "." + t + "_old", "CREATE TABLE " + db + "." + t + " AS " + db + "." + t + "_old ENGINE = Null"} {
					if err := conn.Exec(ctx, q); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
		batches := benchBatches(*cpuReadings)
		before := sumCPU(childCPU(b))
		b.StartTimer()
		start := time.Now()
		for _, batch := range batches {
			if err := w.WriteBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		inserted := time.Since(start)
		afterInsert := sumCPU(childCPU(b))
		waitMerges(b, ctx, conn, db)
		b.StopTimer()
		after := sumCPU(childCPU(b))
		n := float64(*cpuReadings)
		b.ReportMetric(float64((afterInsert-before).Microseconds())/n, "insert-cpu-us/reading")
		b.ReportMetric(float64((after-afterInsert).Microseconds())/n, "merge-cpu-us/reading")
		b.ReportMetric(n/inserted.Seconds(), "readings/s")
		b.ReportMetric(float64(diskBytes(b, ctx, conn, db))/n, "disk-bytes/reading")

		// The flat row of a plain connector, in the same database and run: one MergeTree
		// table of device, seq, ts, two metrics and a 128-hex-character field.
		if err := conn.Exec(ctx, "CREATE TABLE "+db+".flat (device String, seq UInt64, ts UInt64, temp Float64, hum Float64, sig String) ENGINE = MergeTree ORDER BY (device, ts)"); err != nil {
			b.Fatal(err)
		}
		before = sumCPU(childCPU(b))
		b.StartTimer()
		for _, batch := range batches {
			k := len(batch.Readings)
			devs, seqs, tss, temps, hums, sigs := make([]string, k), make([]uint64, k), make([]uint64, k), make([]float64, k), make([]float64, k), make([]string, k)
			for i, r := range batch.Readings {
				devs[i], seqs[i], tss[i], temps[i], hums[i], sigs[i] = r.Device, r.Seq, r.TS, r.Metrics[0].Value, r.Metrics[1].Value, fmt.Sprintf("%x", r.Raw[:64])
			}
			ins, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".flat (device, seq, ts, temp, hum, sig)")
			if err != nil {
				b.Fatal(err)
			}
			for i, c := range []any{devs, seqs, tss, temps, hums, sigs} {
				if err := ins.Column(i).Append(c); err != nil {
					b.Fatal(err)
				}
			}
			if err := ins.Send(); err != nil {
				b.Fatal(err)
			}
		}
		afterInsert = sumCPU(childCPU(b))
		waitMerges(b, ctx, conn, db)
		b.StopTimer()
		after = sumCPU(childCPU(b))
		b.ReportMetric(float64((afterInsert-before).Microseconds())/n, "flat-insert-cpu-us/reading")
		b.ReportMetric(float64((after-afterInsert).Microseconds())/n, "flat-merge-cpu-us/reading")
	}
}

// diskBytes is what the database's active parts take on disk, logging it per table: with
// benchBatches' readings (250 random bytes of raw each, which do not compress), the disk a
// reading costs in ClickHouse with every table and view of the schema.
func diskBytes(b *testing.B, ctx context.Context, conn driver.Conn, db string) uint64 {
	b.Helper()
	rows, err := conn.Query(ctx, "SELECT table, sum(bytes_on_disk), sum(rows) FROM system.parts WHERE database = ? AND active GROUP BY table ORDER BY table", db)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	var total uint64
	for rows.Next() {
		var table string
		var bytes, n uint64
		if err := rows.Scan(&table, &bytes, &n); err != nil {
			b.Fatal(err)
		}
		b.Logf("%-28s %12d bytes on disk, %10d rows", table, bytes, n)
		total += bytes
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return total
}

// waitMerges waits until no merge has run for 20 polls in a row (2 s): the merges of parts the
// inserts left are part of an insert's cost.
func waitMerges(b *testing.B, ctx context.Context, conn driver.Conn, db string) {
	b.Helper()
	idle := 0
	await.Until(b, ctx, "merges to finish", func() (bool, string) {
		var running uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.merges WHERE database = ?", db).Scan(&running); err != nil {
			return false, err.Error()
		}
		if running > 0 {
			idle = 0
		} else {
			idle++
		}
		return idle >= 20, fmt.Sprintf("%d merges running", running)
	})
}

// BenchmarkEventsCPU writes 20,000 rule events as the rules stage does in a drain of 200,000
// readings of `anchorline bench rules` (inserts of -write.events-per-insert events) and reports
// the ClickHouse server's CPU per event, for the inserts and the merges they leave behind.
//
//	go test -run '^$' -bench BenchmarkEventsCPU -benchtime 1x ./pipeline/write/
func BenchmarkEventsCPU(b *testing.B) {
	ctx := context.Background()
	const total = 20_000
	for range b.N {
		b.StopTimer()
		_, db, conn := chserver.NewDatabase(b)
		w := write.New(conn, db)
		evs := make([]rule.Event, total)
		for i := range evs {
			dev := fmt.Sprintf("bench-%05d", i%1000)
			r := fmt.Sprintf("bench-%03d", i%100)
			evs[i] = rule.Event{ID: rule.EventID(r, 1, dev, uint64(i), rule.KindFire), Rule: r, Version: 1, RuleIndex: uint64(i % 100), Height: 40,
				Device: dev, Kind: rule.KindFire, Seq: uint64(i), ArmedAt: uint64(i - 1), Seqs: []uint64{uint64(i - 1), uint64(i)}, Time: time.Now().UnixMilli(), Actions: []string{rule.ActionEvent}}
		}
		before := sumCPU(childCPU(b))
		b.StartTimer()
		for i := 0; i < total; i += *eventsPerInsert {
			if err := w.WriteEvents(ctx, evs[i:min(i+*eventsPerInsert, total)]); err != nil {
				b.Fatal(err)
			}
		}
		afterInsert := sumCPU(childCPU(b))
		waitMerges(b, ctx, conn, db)
		b.StopTimer()
		after := sumCPU(childCPU(b))
		b.ReportMetric(float64((afterInsert-before).Microseconds())/total, "insert-cpu-us/event")
		b.ReportMetric(float64((after-afterInsert).Microseconds())/total, "merge-cpu-us/event")
	}
}

var eventsPerInsert = flag.Int("write.events-per-insert", 200, "events per insert in BenchmarkEventsCPU")
