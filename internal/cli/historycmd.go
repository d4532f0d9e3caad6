package cli

import (
	"github.com/spf13/cobra"
)

// newHistoryCmd is `cdswap history`: a swap's steps, attempts and failures, and its audit.
func (a *App) newHistoryCmd() *cobra.Command {
	var runID string
	var asJSON bool
	var drive driveFlags
	cmd := &cobra.Command{
		Use:   "history ID | --host H --domain D --vdev V",
		Short: "Show a swap's steps, attempts, errors and timings, and who asked and why",
		Long: `history renders a swap's Temporal event history (running, completed, failed, rolled back
or canceled): each step with its attempts, start time, duration and the failures Temporal
kept, how the swap ended, and who asked for it and why. --json prints the same as a stable
JSON document (schema ` + HistorySchema + `). Name the swap by its ID, or name the drive
with --host, --domain and --vdev for its latest swap.`,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			h, err := a.swapHistory(cmd.Context(), drive, args, runID)
			if err != nil {
				return err
			}
			if asJSON {
				return WriteHistoryJSON(a.stdout(), h)
			}
			return WriteHistoryText(a.stdout(), h, a.location())
		}),
	}
	cmd.Flags().StringVar(&runID, "run", "", "a run ID, for an earlier swap with the same ID (default: the latest)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	drive.add(cmd)
	return cmd
}
