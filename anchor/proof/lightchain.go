package proof

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/types"
)

// TrustingPeriod is the trusting period given to CometBFT's light-client checks, and the clock
// they run on is the target header's own time (see schemas/proof.md): a hop verifies as long
// as the two headers are less than TrustingPeriod apart, whenever the bundle is checked, so a
// bundle verifies forever. This ledger is permissioned: its validators are not bonded stake
// that can be withdrawn and then used to sign a fork without penalty, and its validator set
// changes only through M-of-N admin entries that are themselves in the log; the period that
// guards proof-of-stake chains against long-range attacks has nothing to guard here.
const TrustingPeriod = 100 * 365 * 24 * time.Hour

// maxClockDrift lets the target header be checked against its own time ("now" must be later).
const maxClockDrift = time.Second

// trustLevel is the share of a trusted set's power that must sign a header to trust it
// across a skip: CometBFT's default, 1/3.
var trustLevel = light.DefaultTrustLevel

// ErrLightChain means a light block cannot be trusted from the trusted set by CometBFT's
// light-client rules.
var ErrLightChain = errors.New("proof: light chain does not lead from the trusted set")

// lightChain is a run of light blocks, oldest first, whose last is the header a bundle (or an
// audit) relies on, to be followed from a validator set trusted at a height.
type lightChain struct {
	chainID     string
	trusted     *types.ValidatorSet
	trustHeight int64 // 0: trust file without a height; the set is the chain's first
	blocks      []*types.LightBlock
}

// root is the index of the block the trusted set vouches for: the first at or after the trust
// height (the last if all are older). Blocks before it are checked only against each other.
func (c *lightChain) root() int {
	for i, lb := range c.blocks {
		if lb.Height >= c.trustHeight {
			return i
		}
	}
	return len(c.blocks) - 1
}

// hop verifies block i: it is well formed and every signature of its commit verifies, with
// more than 2/3 of its own set's power; it follows block i-1 by CometBFT's light-client rules
// (VerifyAdjacent, or VerifyNonAdjacent with 1/3 of the previous set's power); and if it is
// the root, the trusted set signed it (all of it if it is the same set, else 1/3 of its
// power). It returns what it checked, for the report.
func (c *lightChain) hop(i int) (string, error) {
	lb := c.blocks[i]
	if err := lb.ValidateBasic(c.chainID); err != nil {
		return "", err
	}
	if err := lb.ValidatorSet.VerifyCommitLightAllSignatures(c.chainID, lb.Commit.BlockID, lb.Height, lb.Commit); err != nil {
		return "", err
	}
	if err := nilVotesSigned(c.chainID, lb.ValidatorSet, lb.Commit); err != nil {
		return "", err
	}
	detail := fmt.Sprintf("height %d, %d validators", lb.Height, lb.ValidatorSet.Size())
	if i > 0 {
		prev := c.blocks[i-1]
		if lb.Height <= prev.Height {
			return "", fmt.Errorf("%w: height %d after height %d", ErrLightChain, lb.Height, prev.Height)
		}
		now := c.blocks[len(c.blocks)-1].Time
		if lb.Height == prev.Height+1 {
			if err := light.VerifyAdjacent(prev.SignedHeader, lb.SignedHeader, lb.ValidatorSet, TrustingPeriod, now, maxClockDrift); err != nil {
				return "", fmt.Errorf("%w: height %d from %d: %w", ErrLightChain, lb.Height, prev.Height, err)
			}
			detail += fmt.Sprintf(", the set height %d named next", prev.Height)
		} else {
			if err := light.VerifyNonAdjacent(prev.SignedHeader, prev.ValidatorSet, lb.SignedHeader, lb.ValidatorSet, TrustingPeriod, now, maxClockDrift, trustLevel); err != nil {
				return "", fmt.Errorf("%w: height %d from %d: %w", ErrLightChain, lb.Height, prev.Height, err)
			}
			detail += fmt.Sprintf(", %s of height %d's power signed", share(prev.ValidatorSet, lb.Commit), prev.Height)
		}
	}
	if i != c.root() {
		return detail, nil
	}
	if bytes.Equal(lb.ValidatorsHash, c.trusted.Hash()) {
		// The same set as lb's own, whose signatures all verified above.
		return detail + ", signed by the trusted set", nil
	}
	if err := c.trusted.VerifyCommitLightTrustingAllSignatures(c.chainID, lb.Commit, trustLevel); err != nil {
		return "", fmt.Errorf("%w: height %d is signed by validator set %X: %w", ErrLightChain, lb.Height, lb.ValidatorsHash, err)
	}
	return detail + fmt.Sprintf(", %s of the trusted power signed", share(c.trusted, lb.Commit)), nil
}

// share is the fraction of vals' power whose signatures commit is, as "30/40".
func share(vals *types.ValidatorSet, commit *types.Commit) string {
	var signed int64
	for _, s := range commit.Signatures {
		if s.BlockIDFlag != types.BlockIDFlagCommit {
			continue
		}
		if _, v := vals.GetByAddress(s.ValidatorAddress); v != nil {
			signed += v.VotingPower
		}
	}
	return fmt.Sprintf("%d/%d", signed, vals.TotalVotingPower())
}

// nilVotesSigned checks the signatures CometBFT's commit checks skip: those of validators that
// voted nil. Without it, turning a vote for the block into a nil vote (one byte of
// block_id_flag) would go unnoticed while the others still hold 2/3 of the power.
func nilVotesSigned(chainID string, vals *types.ValidatorSet, commit *types.Commit) error {
	for i, cs := range commit.Signatures {
		if cs.BlockIDFlag != types.BlockIDFlagNil {
			continue
		}
		_, val := vals.GetByIndex(int32(i))
		if val == nil || !bytes.Equal(val.Address, cs.ValidatorAddress) {
			return fmt.Errorf("commit signature %d is not by validator %d of the set", i, i)
		}
		if err := commit.GetVote(int32(i)).Verify(chainID, val.PubKey); err != nil {
			return fmt.Errorf("nil vote %d of the commit at %d: %w", i, commit.Height, err)
		}
	}
	return nil
}
