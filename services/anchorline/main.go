package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/anchorline/anchorline/services/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "anchorline:", err)
		os.Exit(exitCode(err))
	}
}

// Exit statuses of every command.
const (
	exitFailed     = 1 // a proof that fails, audit findings, or any other failure
	exitBadInput   = 2 // a malformed flag, argument, file or configuration: fix the input
	exitIncomplete = 3 // the command could not finish (a server failed): nothing is concluded
)

// exitError carries the exit status of a failure that is not exitFailed.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// badInput marks err as the input's fault (exit status 2).
func badInput(err error) error { return exitError{exitBadInput, err} }

// exitCode is the status the process exits with after err: the one an exitError carries,
// exitBadInput for a configuration error, exitFailed for anything else.
func exitCode(err error) int {
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.code
	case errors.Is(err, config.ErrInvalid):
		return exitBadInput
	}
	return exitFailed
}
