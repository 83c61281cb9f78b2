// Package testlog gives tests a logger that keeps what the code under test logged and shows
// it only when the test fails, so that a failure on a loaded CI machine comes with its cause
// and a passing run stays quiet.
package testlog
