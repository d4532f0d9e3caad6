// Package versions holds the pinned versions of the tools cdswap builds and runs (the
// Temporal CLI, the linters), read from versions.env, the one file the Makefile, the scripts
// and the Go code all take them from.
package versions

import (
	_ "embed"
	"strings"
)

//go:embed versions.env
var env string

// TemporalCLI is the Temporal CLI tag whose dev server cdswap runs (TEMPORAL_CLI_VERSION).
var TemporalCLI = lookup("TEMPORAL_CLI_VERSION")

// lookup returns the value of key in versions.env. A key missing from the file is a
// programming error caught by the package's test, so it panics at init rather than let a
// binary look for a tool under an empty version.
func lookup(key string) string {
	for _, line := range strings.Split(env, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && k == key {
			return v
		}
	}
	panic("versions.env has no " + key)
}
