package workflows

// ChangeStubdomReattach exports the change id of GetVersion's stubdom re-attach change to
// the package's external tests.
const ChangeStubdomReattach = changeStubdomReattach

// ChangeLocalSteps and LocalVBDVersion export the local-steps change id and its version that
// made the PV disk steps local to the package's external tests.
const (
	ChangeLocalSteps = changeLocalSteps
	LocalVBDVersion  = localVBDVersion
)
