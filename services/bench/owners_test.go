package bench

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/anchorline/anchorline/internal/chserver"
	"github.com/anchorline/anchorline/services/config"
)

// A small run of `bench owners`, so that it keeps working: grants, withdrawals and erasures
// each seen in ClickHouse, and the result file has every field.
func TestSmallOwnersRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := buildAnchorline(t, ctx)
	addr, _, _ := chserver.NewDatabase(t)
	cfg := config.Default()
	cfg.ClickHouse.Addr = addr
	var progress strings.Builder
	res, err := RunOwners(ctx, cfg, OwnerOptions{Devices: 10, Readings: 1000, Rounds: 2, Binary: bin, Progress: &progress}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if res.Readings != 1000 || res.ErasedReadings != 2*50 || res.GrantMaxMs < res.GrantP50Ms || res.GrantP50Ms <= 0 || res.WithdrawP50Ms <= 0 || res.EraseP50Ms <= 0 {
		t.Fatalf("result %+v", res)
	}
	checkResultFile(t, res.WriteJSON, "grant_p50_ms", "grant_max_ms", "withdraw_p50_ms", "withdraw_max_ms", "erase_p50_ms", "erase_max_ms", "erased_readings")
}
