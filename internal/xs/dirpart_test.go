package xs

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseDirPart decodes DIRECTORY_PART replies as cxenstored's send_directory_part builds
// them: "<gencnt>|", whole child names each with its NUL, and one more NUL when the list ends.
func TestParseDirPart(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    dirPart
		wantErr string // a substring of the error; "" for success
	}{
		{
			name:    "first piece of a long list",
			payload: "7\x00alpha\x00beta\x00",
			want:    dirPart{gen: "7", names: []string{"alpha", "beta"}, size: 11},
		},
		{
			name:    "last piece",
			payload: "7\x00gamma\x00\x00",
			want:    dirPart{gen: "7", names: []string{"gamma"}, size: 6, last: true},
		},
		{
			name:    "whole list in one piece",
			payload: "12\x00a\x00bc\x00\x00",
			want:    dirPart{gen: "12", names: []string{"a", "bc"}, size: 5, last: true},
		},
		{
			name:    "offset at or past the end: only the end marker",
			payload: "7\x00\x00",
			want:    dirPart{gen: "7", last: true},
		},
		{
			name:    "largest uint64 generation",
			payload: "18446744073709551615\x00x\x00",
			want:    dirPart{gen: "18446744073709551615", names: []string{"x"}, size: 2},
		},
		{name: "empty payload", payload: "", wantErr: "no NUL after the generation count"},
		{name: "generation without NUL", payload: "7", wantErr: "no NUL after the generation count"},
		{name: "empty generation", payload: "\x00a\x00", wantErr: "empty generation count"},
		{name: "no children and no end", payload: "7\x00", wantErr: "no children and no end of list"},
		{name: "child without NUL", payload: "7\x00a\x00bc", wantErr: `does not end with a NUL (last bytes "a\x00bc")`},
		{name: "children after the end", payload: "7\x00a\x00\x00b\x00", wantErr: "2 bytes after the end of the list"},
		{name: "two end markers", payload: "7\x00a\x00\x00\x00", wantErr: "1 bytes after the end of the list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDirPart([]byte(tt.payload))
			if tt.wantErr != "" {
				require.Error(t, err, "parseDirPart(%q) = %+v, want an error", tt.payload, got)
				assert.Contains(t, err.Error(), tt.wantErr, "parseDirPart(%q) error", tt.payload)
				return
			}
			require.NoError(t, err, "parseDirPart(%q)", tt.payload)
			assert.Equal(t, tt.want, got, "parseDirPart(%q) = %+v, want %+v", tt.payload, got, tt.want)
		})
	}
}

// DirPartRestarts is dirPartRestarts, for the tests of package xs_test.
const DirPartRestarts = dirPartRestarts
