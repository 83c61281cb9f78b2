package ledger

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/cometbft/cometbft/types"
)

// ValidatorChanges returns, in increasing order, the heights c in (first, to] whose header is
// signed by another validator set than the header at c-1 (their validators_hash differ);
// first is the earliest height the node still has. A change the app accepted in block h shows
// there at c = h+2 (CometBFT applies validator updates two blocks on).
//
// It reads the headers themselves, not the app's record of its admin entries: a header's
// validators_hash is what a light client checks, it is there on every node and every chain
// (also one that changed validators before the app recorded anything), and it costs a
// bisection of O(changes · log(to)) commits instead of a scan of every block. A set that was
// replaced and later restored exactly (so that the bisection sees equal hashes around it) is
// not reported; the light chain from either neighbour does not need it.
func (c *Client) ValidatorChanges(ctx context.Context, to int64) ([]int64, error) {
	st, err := c.rpc.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("ledger status: %w", err)
	}
	first := max(st.SyncInfo.EarliestBlockHeight, 1)
	if to <= first {
		return nil, nil
	}
	hashes := map[int64][]byte{}
	hashAt := func(h int64) ([]byte, error) {
		if v, ok := hashes[h]; ok {
			return v, nil
		}
		com, err := c.rpc.Commit(ctx, &h)
		if err != nil {
			return nil, fmt.Errorf("ledger commit at %d: %w", h, err)
		}
		if com.Header == nil {
			return nil, fmt.Errorf("ledger commit at %d: no header", h)
		}
		hashes[h] = com.Header.ValidatorsHash
		return com.Header.ValidatorsHash, nil
	}
	var out []int64
	var bisect func(lo, hi int64) error
	bisect = func(lo, hi int64) error {
		a, err := hashAt(lo)
		if err != nil {
			return err
		}
		b, err := hashAt(hi)
		if err != nil {
			return err
		}
		if bytes.Equal(a, b) {
			return nil
		}
		if hi == lo+1 {
			out = append(out, hi)
			return nil
		}
		mid := lo + (hi-lo)/2
		if err := bisect(lo, mid); err != nil {
			return err
		}
		return bisect(mid, hi)
	}
	if err := bisect(first, to); err != nil {
		return nil, err
	}
	return out, nil
}

// LightChain returns the light blocks (oldest first) that lead a light client from any
// validator set the chain had before height to the header at height: for each change of the
// set at c, the light blocks at c-1 (the last the old set signed; its next_validators_hash
// names the new set) and at c (the first the new set signed), below height. Consecutive blocks
// of the result are then either adjacent (CometBFT's VerifyAdjacent holds whatever the change)
// or signed by the same set (VerifyNonAdjacent holds with all of the trusted power). It is
// empty when the set never changed.
func (c *Client) LightChain(ctx context.Context, height int64) ([]*types.LightBlock, error) {
	changes, err := c.ValidatorChanges(ctx, height)
	if err != nil {
		return nil, err
	}
	var heights []int64
	for _, ch := range changes {
		for _, h := range []int64{ch - 1, ch} {
			if h < height && (len(heights) == 0 || heights[len(heights)-1] < h) {
				heights = append(heights, h)
			}
		}
	}
	out := make([]*types.LightBlock, 0, len(heights))
	for _, h := range slices.Compact(heights) {
		lb, err := c.LightBlock(ctx, h)
		if err != nil {
			return nil, err
		}
		out = append(out, lb)
	}
	return out, nil
}
