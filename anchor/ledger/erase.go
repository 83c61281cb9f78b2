package ledger

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/anchorline/anchorline/schemas/entry"
)

// PathErasures lists the committed erase entries (ErasuresRequest -> Erasures).
const PathErasures = "/erasures"

// prefErase indexes the erase entries by log index: x/<index BE> = the device id. An erase
// entry is a log entry like any other (the log root commits it); the index only finds them.
var prefErase = []byte("x/")

// ErasuresRequest asks for up to Max erase entries (capped at maxEntries) from log index From on.
type ErasuresRequest struct {
	From uint64 `json:"from"`
	Max  uint64 `json:"max"`
}

// Erasure is a committed erase entry with its log index and block.
type Erasure struct {
	Index  uint64 `json:"index"`
	Height uint64 `json:"height"`
	Entry  []byte `json:"entry"`
}

// Erasures are erase entries in log order, and the latest committed height.
type Erasures struct {
	Erasures []Erasure `json:"erasures"`
	Height   uint64    `json:"height"`
}

// checkErase validates an erase entry: signed by the device's bound owner, or by an admin
// with a reason, for a device the registry has known.
func (s *state) checkErase(dec entry.Entry, st *staged, auth *authority) error {
	e := dec.Erase
	if err := v2Only(s, "erase of "+e.Dev); err != nil {
		return err
	}
	_, known, err := s.recordAt(e.Dev, s.height)
	if err != nil {
		return err
	}
	if _, staged := st.recordOf(e.Dev); !known && !staged {
		return &txError{CodeConflict, fmt.Sprintf("erase of %s: the device has never been registered", e.Dev)}
	}
	owner, ok, err := s.ownerAt(e.Dev, s.height, st)
	if err != nil {
		return err
	}
	switch {
	case ok && owner.Bound() && bytes.Equal(owner.Key, e.Key):
		return nil
	case e.Alg == "ed25519" && auth.isAdmin(e.Key):
		if e.Reason == "" {
			return &txError{CodeUnauthorised, fmt.Sprintf("erase of %s by admin %x: an admin's erasure needs a reason", e.Dev, e.Key)}
		}
		return nil
	}
	return &txError{CodeUnauthorised, fmt.Sprintf("erase of %s: key %x is neither the device's owner nor an admin", e.Dev, e.Key)}
}

// recordOf is the device record the block stages, if any (st may be nil).
func (st *staged) recordOf(dev string) (version, bool) {
	if st == nil {
		return version{}, false
	}
	v, ok := st.records[dev]
	return v, ok
}

// erasuresFrom lists committed erase entries from log index from on.
func (s *state) erasuresFrom(from, maxN uint64) (Erasures, error) {
	out := Erasures{Erasures: []Erasure{}, Height: s.height}
	it, err := s.db.Iterator(dbKey(prefErase, u64(from)), prefixEnd(prefErase))
	if err != nil {
		return Erasures{}, err
	}
	defer it.Close()
	for ; it.Valid() && uint64(len(out.Erasures)) < min(max(maxN, 1), maxEntries); it.Next() {
		i := binary.BigEndian.Uint64(it.Key()[len(prefErase):])
		e, h, err := s.entryAt(i)
		if err != nil {
			return Erasures{}, err
		}
		out.Erasures = append(out.Erasures, Erasure{Index: i, Height: h, Entry: e})
	}
	return out, it.Error()
}

// Erasures returns up to max committed erase entries from log index from on.
func (c *Client) Erasures(ctx context.Context, from, max uint64) (Erasures, error) {
	var out Erasures
	err := c.query(ctx, PathErasures, ErasuresRequest{From: from, Max: max}, &out)
	return out, err
}
