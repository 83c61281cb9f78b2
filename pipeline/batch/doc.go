// Package batch is where verified readings are batched and hashed: it gives each reading its
// leaf_index in arrival order and, on flush, computes the batch's Merkle root over the reading
// leaves (DESIGN 2.2) and the batch record published for the anchor service.
package batch
