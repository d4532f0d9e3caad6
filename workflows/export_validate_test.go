package workflows

// ChangeValidateLimits exports the change id of GetVersion's input limits to the external
// tests (version guard).
const ChangeValidateLimits = changeValidateLimits
