// Package workflows holds cdswap's deterministic code: ChangeMedium, which changes or ejects
// the medium of one guest CD-ROM drive as libxl's cd-insert/cd-eject do, step by step, each
// step an activity of package activities with its own timeout and retry policy, and puts the
// old medium back if the change fails once the drive was touched; and ResolveDrive, which
// turns an operator's host/domain/vdev into a domid and devid on the host's task queue.
//
// Everything here runs inside Temporal's workflow sandbox: only workflow.* APIs for time,
// timers and concurrency, no I/O, no map iteration that could change the commands issued,
// no goroutines. `workflowcheck ./workflows/...` checks this.
//
// Versioning: a change that alters the commands a workflow issues (adds, removes or reorders
// a step, renames an activity, changes a timer) must not break runs already in flight.
// Put it behind a version marker, keeping the old branch for as long as histories recorded
// before it may be replayed:
//
//	v := workflow.GetVersion(ctx, "restore-second-release", workflow.DefaultVersion, 1)
//	if v >= 1 {
//		// new commands
//	}
//
// then record a history of the new path into testdata/histories/, where the replay test
// checks every recorded history against the current code. Changing only activity inputs,
// options or task queues does not need a version (Go's replayer compares activity ids and
// types only), but think about runs already past that step.
package workflows
