// Package simulate is the device load generator behind `anchorline device simulate`: N
// simulated devices, each with its own key, sign chained readings and publish them to
// JetStream at a fixed total rate, with live progress and a throughput summary.
package simulate
