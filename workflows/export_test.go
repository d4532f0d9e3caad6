package workflows

// ChangeStubdomReattach exports the change id of GetVersion's stubdom re-attach change to
// the package's external tests.
const ChangeStubdomReattach = changeStubdomReattach

// ChangeLocalSteps, LocalVBDVersion, LocalEjectVersion and ImpliedLimitsVersion export the
// local-steps change id and its versions to the package's external tests.
const (
	ChangeLocalSteps     = changeLocalSteps
	LocalVBDVersion      = localVBDVersion
	LocalEjectVersion    = localEjectVersion
	ImpliedLimitsVersion = impliedLimitsVersion
	LocalAddFDVersion    = localAddFDVersion
)

// ChangeFleetRounds exports the change id of the batch's rounds to the package's external
// tests.
const ChangeFleetRounds = changeFleetRounds

// RoundsFindDroppedVersion exports the version of changeFleetRounds whose batches look for
// the starts they had queued before dropping them.
const RoundsFindDroppedVersion = roundsFindDroppedVersion

// ChangeCancelAtInspect exports the change id of a cancel before Inspect answered.
const ChangeCancelAtInspect = changeCancelAtInspect
