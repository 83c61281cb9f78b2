package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

var errDown = errors.New("down")

func TestDoRetriesUntilSuccess(t *testing.T) {
	calls, notified := 0, 0
	v, err := Do(t.Context(), Policy{Initial: time.Millisecond, Max: time.Millisecond}, func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, errDown
		}
		return 7, nil
	}, func(err error, _ time.Duration) {
		if !errors.Is(err, errDown) {
			t.Errorf("notified of %v", err)
		}
		notified++
	})
	if err != nil || v != 7 || calls != 3 || notified != 2 {
		t.Fatalf("got %d, %v after %d calls, %d notifications; want 7, nil, 3, 2", v, err, calls, notified)
	}
}

func TestDoPermanent(t *testing.T) {
	calls := 0
	_, err := Do(t.Context(), Default(), func(context.Context) (struct{}, error) {
		calls++
		return struct{}{}, Permanent(errDown)
	}, nil)
	if !errors.Is(err, errDown) || calls != 1 {
		t.Fatalf("got %v after %d calls; want errDown after 1", err, calls)
	}
	var perm interface{ Unwrap() error }
	if errors.As(err, &perm) {
		t.Fatalf("permanent error returned wrapped: %T", err)
	}
}

func TestDoGivesUp(t *testing.T) {
	_, err := Do(t.Context(), Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond, Timeout: 20 * time.Millisecond},
		func(context.Context) (int, error) { return 0, errDown }, nil)
	if !errors.Is(err, ErrGaveUp) || !errors.Is(err, errDown) {
		t.Fatalf("got %v; want ErrGaveUp wrapping errDown", err)
	}
}

func TestDoContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	calls := 0
	_, err := Do(ctx, Default(), func(context.Context) (int, error) {
		calls++
		cancel()
		return 0, errDown
	}, nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errDown) || calls != 1 {
		t.Fatalf("got %v after %d calls; want context.Canceled wrapping errDown after 1", err, calls)
	}
}

func TestWaiterReset(t *testing.T) {
	w := Policy{Initial: time.Millisecond, Max: time.Second, Timeout: time.Hour}.Start()
	for range 5 {
		if err := w.Wait(t.Context(), errDown); err != nil {
			t.Fatal(err)
		}
	}
	w.Reset()
	next, err := w.next(errDown)
	if err != nil || next > 2*time.Millisecond {
		t.Fatalf("after Reset the next wait is %s (%v); want about the initial 1ms", next, err)
	}
}
