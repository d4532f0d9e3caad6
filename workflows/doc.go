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
//
// Each GetVersion a new run records costs it two history events, the Version marker and the
// SDK's upsert of TemporalChangeVersion, which is a visibility write on the server. A change
// that ships with another one already versioned can be a new version of that change id
// instead: version 4 of local-short-steps (impliedLimitsVersion) implies
// validate-input-limits, so that a new ChangeMedium run records one GetVersion before its
// first step instead of two. The order in which a run asks its GetVersions does not matter on
// replay (the SDK reads a workflow task's version markers before it runs the code);
// TestVersionsAnsweredAsRecorded checks each recorded run gets the versions it recorded.
package workflows
