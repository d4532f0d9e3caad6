package cli

import (
	"fmt"

	"github.com/cdswap/cdswap/workflows"
)

// Exit codes of Main and App.Run.
const (
	// ExitOK: the command did what was asked (a swap that ended changed, ejected or
	// unchanged).
	ExitOK = 0
	// ExitFailure: it failed, or the swap did; the message says what to do.
	ExitFailure = 1
	// ExitUsage: bad usage; the command's usage follows the message.
	ExitUsage = 2
)

// UsageError is a command line that cannot work as written (a missing or malformed flag or
// argument): exit code ExitUsage, with the command's usage.
type UsageError struct {
	// Msg says what is wrong with the command line.
	Msg string
}

func (e *UsageError) Error() string { return e.Msg }

// usagef returns a *UsageError.
func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// userError is a failure explained for a person: msg says what went wrong and what to do,
// hint (optional) where to look next. cause is kept for errors.Is/As, not shown.
type userError struct {
	msg   string
	hint  string
	cause error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.cause }

// runError marks an error returned by a command's RunE, to tell it from cobra's own errors
// (unknown command, bad flag, wrong argument count), which are usage errors.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// workflowMessage is the message a workflow failed with, without the SDK's wrapping
// ("workflow execution error (type: ..., workflowID: ..., runID: ...): ..."): the message
// the workflows phrased for a person, or how the run ended ("the workflow was canceled").
func workflowMessage(err error) string { return workflows.ErrorMessage(err, "the workflow") }
