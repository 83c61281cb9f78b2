package verify

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/curve/scalar"
)

// BenchmarkBatchEquationShape times the multiscalar multiplication at the heart of Ed25519 batch
// verification, [-Σ z_i s_i]B + Σ [z_i]R_i + Σ [z_i k_i]A_i, in two shapes: as curve25519-voi's
// BatchVerifier computes it (one precomputed A term per signature), and with the terms of one
// key coalesced into one, Σ_A [Σ_{i: A_i = A} z_i k_i]A (ed25519-zebra's batch verifier does
// this). It measures the arithmetic only, to size what coalescing would save on a chunk of
// ingest (2048 signatures from 500 devices, as anchorline bench sends them); it is not a
// verifier.
//
//	go test -run '^$' -bench BatchEquationShape ./pipeline/verify/
func BenchmarkBatchEquationShape(b *testing.B) {
	const n, keys = 2048, 500
	randScalar := func() *scalar.Scalar {
		var buf [64]byte
		_, _ = rand.Read(buf[:])
		s, err := scalar.New().SetBytesModOrderWide(buf[:])
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	randPoint := func() *curve.EdwardsPoint {
		return curve.NewEdwardsPoint().MulBasepoint(curve.ED25519_BASEPOINT_TABLE, randScalar())
	}
	dynScalars := make([]*scalar.Scalar, n+1) // B and the R_i
	dynPoints := make([]*curve.EdwardsPoint, n+1)
	dynPoints[0] = curve.ED25519_BASEPOINT_POINT
	for i := range dynScalars {
		dynScalars[i] = randScalar()
		if i > 0 {
			dynPoints[i] = randPoint()
		}
	}
	expanded := make([]*curve.ExpandedEdwardsPoint, keys)
	for i := range expanded {
		expanded[i] = curve.NewExpandedEdwardsPoint(randPoint())
	}
	for _, bc := range []struct {
		name  string
		terms int // static (key) terms
	}{{fmt.Sprintf("per-signature-%d", n), n}, {fmt.Sprintf("coalesced-%d-keys", keys), keys}} {
		static := make([]*scalar.Scalar, bc.terms)
		points := make([]*curve.ExpandedEdwardsPoint, bc.terms)
		for i := range static {
			static[i], points[i] = randScalar(), expanded[i%keys]
		}
		b.Run(bc.name, func(b *testing.B) {
			var out curve.EdwardsPoint
			for b.Loop() {
				out.ExpandedMultiscalarMulVartime(static, points, dynScalars, dynPoints)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/signature")
		})
	}
}
