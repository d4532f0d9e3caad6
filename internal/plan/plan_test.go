package plan

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseGood(t *testing.T) {
	want := []Row{
		{Line: 2, Host: "h1", Domain: "web1", Vdev: "hdc", Medium: "/isos/a.iso"},
		{Line: 4, Host: "h2", Domain: "7", Vdev: "xvdc", Medium: "", Format: ""},
		{Line: 5, Host: "h2", Domain: "db", Vdev: "hdc", Medium: "/isos/b.qcow2", Format: "qcow2"},
	}
	tests := []struct {
		name, file, data string
	}{
		{"csv", "p.csv", "host,domain,vdev,medium,format\nh1,web1,hdc,/isos/a.iso,\n# a comment\nh2,7,xvdc,eject,\nh2,db,hdc,/isos/b.qcow2,qcow2\n"},
		{"csv BOM CRLF columns in another order", "p.csv", "\xef\xbb\xbfVdev,Host,Domain,Medium,Format\r\nhdc,h1,web1,/isos/a.iso,\r\n\r\nxvdc,h2,7,EJECT,\r\nhdc,h2,db,/isos/b.qcow2,qcow2\r\n"},
		{"yaml list", "p.yaml", "- host: h1\n  domain: web1\n  vdev: hdc\n  medium: /isos/a.iso\n\n- host: h2\n  domain: 7\n  vdev: xvdc\n  eject: true\n- {host: h2, domain: db, vdev: hdc, medium: /isos/b.qcow2, format: qcow2}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.file, []byte(tt.data))
			require.NoError(t, err)
			if tt.file == "p.yaml" {
				// YAML lines are the mappings' own.
				want := append([]Row(nil), want...)
				want[0].Line, want[1].Line, want[2].Line = 1, 6, 10
				assert.Equal(t, want, got)
				return
			}
			assert.Equal(t, want, got)
		})
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name, file, data string
		want             []string // each a problem, "line N: ..." substring
	}{
		{"empty csv", "p.csv", "", []string{"the file is empty"}},
		{"only a BOM and blanks", "p.csv", "\xef\xbb\xbf\r\n  \n", []string{"the file is empty"}},
		{"header only", "p.csv", "host,domain,vdev,medium\n", []string{"header but no drives"}},
		{"missing column", "p.csv", "host,domain,medium\nh1,web1,/isos/a.iso\n", []string{`line 1: the header has no "vdev" column`}},
		{"unknown column", "p.csv", "host,domain,vdev,medium,colour\nh1,web1,hdc,/a,red\n", []string{`line 1: unknown column "colour"`}},
		{"short record", "p.csv", "host,domain,vdev,medium\nh1,web1,hdc\nh1,web2,hdc,/isos/a.iso\n", []string{"line 2: 3 field(s), but the header has 4"}},
		{"bad fields, every row", "p.csv", "host,domain,vdev,medium\nh 1,web1,hdc,/isos/a.iso\nh1,web1,hd/c,/isos/a.iso\nh1,web2,hdc,isos/a.iso\nh1,web3,hdc,\n",
			[]string{"line 2: bad host", "line 3: bad vdev", "line 4: bad medium", "line 5: the medium is empty"}},
		{"duplicate drive", "p.csv", "host,domain,vdev,medium\nh1,web1,hdc,/isos/a.iso\nh1,web2,hdc,/isos/a.iso\nh1,web1,hdc,eject\n",
			[]string{"line 4: drive hdc of web1 on host h1 is already in the plan at line 2"}},
		{"eject with a format", "p.csv", "host,domain,vdev,medium,format\nh1,web1,hdc,eject,qcow2\n", []string{"line 2: an eject takes no format"}},
		{"bad quotes", "p.csv", "host,domain,vdev,medium\nh1,\"web1,hdc,/a\n", []string{"malformed CSV"}},
		{"empty yaml", "p.yml", "\n", []string{"the file is empty"}},
		{"yaml not a list", "p.yaml", "host: h1\n", []string{`without a "drives" list`}},
		{"yaml missing keys", "p.yaml", "drives:\n  - host: h1\n    vdev: hdc\n    medium: /a\n  - host: h1\n    domain: web2\n    vdev: hdc\n    colour: red\n",
			[]string{`line 2: the drive has no "domain"`, `line 8: unknown key "colour"`, "line 5: the drive has no medium"}},
		{"yaml broken", "p.yaml", "- host: [h1\n", []string{"not valid YAML"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := Parse(tt.file, []byte(tt.data))
			var perr *Error
			require.True(t, errors.As(err, &perr), "Parse(%q) = %v, %v; want an *Error", tt.data, rows, err)
			assert.Len(t, perr.Problems, len(tt.want), "%v", err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Contains(t, err.Error(), "nothing was started")
		})
	}
}

// A plan of 100,000 drives parses, and its problems are still reported by line.
func TestParseLarge(t *testing.T) {
	var b strings.Builder
	b.WriteString("host,domain,vdev,medium\r\n")
	for i := range 100_000 {
		fmt.Fprintf(&b, "h%d,web%d,hdc,/isos/drivers-2026.iso\r\n", i%10, i)
	}
	rows, err := Parse("big.csv", []byte(b.String()))
	require.NoError(t, err)
	require.Len(t, rows, 100_000)
	assert.Equal(t, Row{Line: 100_001, Host: "h9", Domain: "web99999", Vdev: "hdc", Medium: "/isos/drivers-2026.iso"}, rows[99_999])
	assert.Equal(t, []string{"h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8", "h9"}, Hosts(rows))
}
