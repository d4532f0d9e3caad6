package workflows

// ChangeStubdomReattach exports the change id of GetVersion's stubdom re-attach change to
// the package's external tests.
const ChangeStubdomReattach = changeStubdomReattach
