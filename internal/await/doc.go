// Package await lets tests wait for an event instead of sleeping: Until polls a condition until
// it holds, and fails the test with the condition's last word when the context ends first.
package await
