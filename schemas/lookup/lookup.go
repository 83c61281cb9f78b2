package lookup

import "errors"

var (
	// ErrNotFound: what was asked for does not exist (yet). The HTTP API answers 404.
	ErrNotFound = errors.New("not found")
	// ErrNotAnchored: the reading or batch exists, but no committed anchor covers it yet;
	// it will be anchored within an anchor interval or so. The HTTP API answers 409.
	ErrNotAnchored = errors.New("not anchored yet")
)
