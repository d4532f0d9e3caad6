// Package cmdexit tells, for cdswap's cobra commands (cdswap-worker, xensim), a command line
// that cannot work as written (exit status 2) from a run that failed (exit status 1).
//
// cobra's and pflag's own errors (an unknown flag, a flag without its value, a stray
// argument) carry no type of their own, so the rule is the CLI's: a command body's error is
// a run failure unless the body marked it as a usage error; any other error is usage.
package cmdexit

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	// OK: the command did what it was asked.
	OK = 0
	// Failure: the run failed.
	Failure = 1
	// Usage: the command line cannot work as written.
	Usage = 2
)

// UsageError marks an error a command body found in its own flags or arguments.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a message formatted as by fmt.Errorf.
func Usagef(format string, args ...any) error { return UsageError{fmt.Errorf(format, args...)} }

// runError marks an error of a command body that is not a UsageError.
type runError struct{ err error }

func (e runError) Error() string { return e.err.Error() }
func (e runError) Unwrap() error { return e.err }

// RunE wraps a command body for cobra.Command.RunE: its errors count as run failures
// (IsRunFailure), unless it returned a UsageError.
func RunE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		if err == nil || errors.As(err, new(UsageError)) {
			return err
		}
		return runError{err}
	}
}

// IsRunFailure reports whether err, returned by cobra's Execute, came from a command body
// wrapped by RunE and is not a UsageError.
func IsRunFailure(err error) bool { return errors.As(err, new(runError)) }

// Code is the exit status of err returned by cobra's Execute: OK, Failure for a run failure,
// Usage for everything else.
func Code(err error) int {
	switch {
	case err == nil:
		return OK
	case IsRunFailure(err):
		return Failure
	}
	return Usage
}
