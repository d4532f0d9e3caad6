package xs

import (
	"fmt"
	"strings"
)

// ValidatePath reports whether xenstored would accept p as a node path: absolute paths up
// to AbsPathMax, relative ones up to RelPathMax, characters from [A-Za-z0-9-/_@], no empty
// component and no trailing slash except for "/" itself. Watch paths starting with '@'
// ("@introduceDomain") are accepted too.
func ValidatePath(p string) error {
	if p == "" {
		return fmt.Errorf("empty path: %w", ErrBadPath)
	}
	limit := RelPathMax
	if p[0] == '/' {
		limit = AbsPathMax
	}
	if len(p) > limit {
		return fmt.Errorf("path of %d bytes is over the %d-byte limit: %w", len(p), limit, ErrBadPath)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '/' || c == '_' || c == '@'
		if !ok {
			return fmt.Errorf("path %q has character %q at %d, allowed are [A-Za-z0-9-/_@]: %w", p, c, i, ErrBadPath)
		}
	}
	if p != "/" && (strings.HasSuffix(p, "/") || strings.Contains(p, "//")) {
		return fmt.Errorf("path %q has an empty component: %w", p, ErrBadPath)
	}
	return nil
}
