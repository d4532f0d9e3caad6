package cmdexit

import (
	"errors"
	"testing"

	"github.com/spf13/cobra"
)

func TestCode(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		body error
		args []string
		want int
	}{
		{"ok", nil, nil, OK},
		{"run failure", boom, nil, Failure},
		{"usage found by the body", Usagef("--x %q: want y", "z"), nil, Usage},
		{"cobra's unknown flag", nil, []string{"--nope"}, Usage},
		{"cobra's stray argument", nil, []string{"extra"}, Usage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := &cobra.Command{Use: "x", Args: cobra.NoArgs, SilenceUsage: true, SilenceErrors: true,
				RunE: RunE(func(*cobra.Command, []string) error { return tt.body })}
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if got := Code(err); got != tt.want {
				t.Errorf("Code(%v) = %d, want %d", err, got, tt.want)
			}
			if tt.body != nil && !errors.Is(err, tt.body) && tt.want == Failure {
				t.Errorf("Execute() = %v, want it to wrap %v", err, tt.body)
			}
		})
	}
}
