package versions

import (
	"regexp"
	"testing"
)

// Every line of versions.env must be a comment, blank, or KEY=VALUE with no spaces or quotes,
// or make and bash would read it differently.
func TestEnvFileIsMakeAndShellSafe(t *testing.T) {
	line := regexp.MustCompile(`^([A-Z_]+=v?[0-9][0-9A-Za-z.+-]*|#.*|)$`)
	for i, l := range regexp.MustCompile("\r?\n").Split(env, -1) {
		if !line.MatchString(l) {
			t.Errorf("versions.env:%d = %q, want KEY=vX.Y.Z (or KEY=N), a comment or blank", i+1, l)
		}
	}
}

func TestTemporalCLI(t *testing.T) {
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(TemporalCLI) {
		t.Errorf("TemporalCLI = %q, want a tag like v1.5.1", TemporalCLI)
	}
}
