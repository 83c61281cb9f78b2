package lookup_test

import (
	"errors"
	"fmt"

	"github.com/anchorline/anchorline/schemas/lookup"
)

// Each layer adds its context with %w; whoever looks at the error asks errors.Is.
func Example() {
	stored := fmt.Errorf("%w: reading boiler-7 seq 42", lookup.ErrNotFound) // the store
	served := fmt.Errorf("GET /v1/readings/boiler-7/42/proof: %w", stored)  // the API, on its way to a 404
	fmt.Println(errors.Is(served, lookup.ErrNotFound), errors.Is(served, lookup.ErrNotAnchored))
	fmt.Println(served)
	// Output:
	// true false
	// GET /v1/readings/boiler-7/42/proof: not found: reading boiler-7 seq 42
}
