// Package plan reads the plan of a fleet swap: a CSV or YAML file of rows host, domain,
// vdev, medium (the image's path on the host, or the word "eject") and an optional format,
// and checks each row on its own, before anything asks a host: every bad row is reported
// with its line number, so that a person fixes them all in one go.
//
// What only a host can say (does the domain exist, is the drive a CD-ROM, would the host
// serve the medium) is checked later, by the hosts' inventories (the cdswap CLI).
package plan

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/cdswap/cdswap/workflows"
)

// Eject is what the medium column holds for a drive to be emptied.
const Eject = "eject"

// MaxRows bounds a plan's rows, so that a wrong file (a log, a dump) cannot make the CLI
// hold gigabytes: a million drives is ten times the largest fleet cdswap is built for.
const MaxRows = 1_000_000

// Columns of a plan, in the order a CSV header usually has them. Format is optional.
const (
	ColHost   = "host"
	ColDomain = "domain"
	ColVdev   = "vdev"
	ColMedium = "medium"
	ColFormat = "format"
)

// Row is one drive of a plan.
type Row struct {
	// Line is the row's line in the file (1-based; a YAML row's line is its first key's).
	Line int
	// Host is the dom0 host (its cdswap-worker's --host).
	Host string
	// Domain is the guest's name or domid.
	Domain string
	// Vdev is the drive (hdc, xvdc...).
	Vdev string
	// Medium is the new medium's path on the host; "" ejects.
	Medium string
	// Format is the image's format ("" = raw).
	Format string
}

// Key identifies the drive of a row, for finding duplicates.
func (r Row) Key() string { return r.Host + "\x00" + r.Domain + "\x00" + r.Vdev }

// Problem is one fault of a plan.
type Problem struct {
	// Line is the line of the row at fault, 0 for the file as a whole.
	Line int
	// Msg says what is wrong and what to do.
	Msg string
}

func (p Problem) String() string {
	if p.Line == 0 {
		return p.Msg
	}
	return fmt.Sprintf("line %d: %s", p.Line, p.Msg)
}

// Error is a plan with problems; it lists every one, in line order.
type Error struct {
	// Name is the plan's file name, for messages.
	Name string
	// Problems are the faults found, sorted by line.
	Problems []Problem
}

// maxProblems bounds the malformed CSV records reported before the reading stops.
const maxProblems = 1000

// maxShown bounds the problems Error's text lists; Problems holds them all.
const maxShown = 50

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "plan %s has %d problem(s); nothing was started:", e.Name, len(e.Problems))
	for i, p := range e.Problems {
		if i == maxShown {
			fmt.Fprintf(&b, "\n  ... and %d more", len(e.Problems)-maxShown)
			break
		}
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

// Sort sorts problems by line, keeping the order of a line's own.
func Sort(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int { return a.Line - b.Line })
}

// Parse reads a plan from data: YAML if name ends in .yaml or .yml, else CSV. Each row is
// checked on its own (Check); a plan with any problem is an *Error listing them all.
func Parse(name string, data []byte) ([]Row, error) {
	var rows []Row
	var probs []Problem
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml":
		rows, probs = parseYAML(data)
	default:
		rows, probs = parseCSV(data)
	}
	if len(probs) == 0 {
		probs = Check(rows)
	}
	if len(probs) > 0 {
		Sort(probs)
		return nil, &Error{Name: name, Problems: probs}
	}
	return rows, nil
}

// bom is the UTF-8 byte order mark that some editors put first.
var bom = []byte("\xef\xbb\xbf")

// parseCSV reads a CSV plan: a header naming the columns (any order, any case), then one
// drive per record. Blank lines and lines starting with '#' are skipped; CRLF line ends and
// a leading BOM are accepted.
func parseCSV(data []byte) ([]Row, []Problem) {
	data = bytes.TrimPrefix(data, bom)
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, []Problem{{Msg: "the file is empty: write a header (host,domain,vdev,medium) and one line per drive"}}
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.Comment = '#'
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err != nil {
		return nil, []Problem{{Line: csvLine(err, 1), Msg: fmt.Sprintf("the header cannot be read: %v", csvMsg(err))}}
	}
	hline, _ := r.FieldPos(0)
	cols := map[string]int{}
	var probs []Problem
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		switch h {
		case ColHost, ColDomain, ColVdev, ColMedium, ColFormat:
			if _, dup := cols[h]; dup {
				probs = append(probs, Problem{hline, fmt.Sprintf("column %q appears twice in the header", h)})
			}
			cols[h] = i
		default:
			probs = append(probs, Problem{hline, fmt.Sprintf("unknown column %s in the header: the columns are host, domain, vdev, medium and, optionally, format", strconv.Quote(h))})
		}
	}
	for _, c := range []string{ColHost, ColDomain, ColVdev, ColMedium} {
		if _, ok := cols[c]; !ok {
			probs = append(probs, Problem{hline, fmt.Sprintf("the header has no %q column: the header must name host, domain, vdev and medium (an image path, or %q)", c, Eject)})
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	field := func(rec []string, c string) string {
		i, ok := cols[c]
		if !ok || i >= len(rec) {
			return ""
		}
		return strings.TrimSpace(rec[i])
	}
	var rows []Row
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			probs = append(probs, Problem{csvLine(err, 0), fmt.Sprintf("malformed CSV: %v", csvMsg(err))})
			// A parse error spoils one record; read on to report the others, up to a
			// bound, in case the reader cannot get past it.
			var pe *csv.ParseError
			if errors.As(err, &pe) && len(probs) < maxProblems {
				continue
			}
			break
		}
		line, _ := r.FieldPos(0)
		if len(rec) != len(header) {
			probs = append(probs, Problem{line, fmt.Sprintf("%d field(s), but the header has %d", len(rec), len(header))})
			continue
		}
		if len(rows) >= MaxRows {
			probs = append(probs, Problem{line, fmt.Sprintf("more than %d rows: split the plan", MaxRows)})
			break
		}
		rows = append(rows, Row{Line: line, Host: field(rec, ColHost), Domain: field(rec, ColDomain), Vdev: field(rec, ColVdev),
			Medium: field(rec, ColMedium), Format: field(rec, ColFormat)})
	}
	if len(rows) == 0 && len(probs) == 0 {
		probs = append(probs, Problem{Msg: "the plan has a header but no drives: add one line per drive"})
	}
	return rows, probs
}

// csvLine is the line of a csv error, or def.
func csvLine(err error, def int) int {
	var pe *csv.ParseError
	if errors.As(err, &pe) && pe.Line > 0 {
		return pe.Line
	}
	return def
}

// csvMsg is a csv error without its own line prefix.
func csvMsg(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parseYAML reads a YAML plan: a list of mappings with the keys host, domain, vdev, medium
// and format (or a mapping whose "drives" key holds that list). A drive may say `eject:
// true` instead of a medium.
func parseYAML(data []byte) ([]Row, []Problem) {
	data = bytes.TrimPrefix(data, bom)
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, []Problem{{Msg: fmt.Sprintf("the file is not valid YAML: %v", err)}}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, []Problem{{Msg: "the file is empty: write a list of drives (- host: h1\\n  domain: web1\\n  vdev: hdc\\n  medium: /isos/x.iso)"}}
	}
	list := doc.Content[0]
	if list.Kind == yaml.MappingNode {
		var found *yaml.Node
		for i := 0; i+1 < len(list.Content); i += 2 {
			if list.Content[i].Value == "drives" {
				found = list.Content[i+1]
			}
		}
		if found == nil {
			return nil, []Problem{{Line: list.Line, Msg: `the document is a mapping without a "drives" list: write a list of drives, or put it under "drives:"`}}
		}
		list = found
	}
	if list.Kind != yaml.SequenceNode {
		return nil, []Problem{{Line: list.Line, Msg: "the plan must be a list of drives"}}
	}
	if len(list.Content) == 0 {
		return nil, []Problem{{Line: list.Line, Msg: "the plan lists no drives"}}
	}
	if len(list.Content) > MaxRows {
		return nil, []Problem{{Msg: fmt.Sprintf("%d rows: at most %d are allowed; split the plan", len(list.Content), MaxRows)}}
	}
	var rows []Row
	var probs []Problem
	for _, item := range list.Content {
		if item.Kind != yaml.MappingNode {
			probs = append(probs, Problem{item.Line, "a drive must be a mapping of host, domain, vdev and medium"})
			continue
		}
		row := Row{Line: item.Line}
		seen := map[string]bool{}
		eject := false
		ok := true
		for i := 0; i+1 < len(item.Content); i += 2 {
			k, v := item.Content[i], item.Content[i+1]
			key := strings.ToLower(k.Value)
			if seen[key] {
				probs = append(probs, Problem{k.Line, fmt.Sprintf("key %q appears twice in one drive", key)})
				ok = false
			}
			seen[key] = true
			if v.Kind != yaml.ScalarNode {
				probs = append(probs, Problem{v.Line, fmt.Sprintf("%s must be a single value", key)})
				ok = false
				continue
			}
			val := strings.TrimSpace(v.Value)
			switch key {
			case ColHost:
				row.Host = val
			case ColDomain:
				row.Domain = val
			case ColVdev:
				row.Vdev = val
			case ColMedium:
				row.Medium = val
			case ColFormat:
				row.Format = val
			case "eject":
				b, err := strconv.ParseBool(val)
				if err != nil {
					probs = append(probs, Problem{v.Line, fmt.Sprintf("eject must be true or false, not %s", strconv.Quote(val))})
					ok = false
				}
				eject = b
			default:
				probs = append(probs, Problem{k.Line, fmt.Sprintf("unknown key %s: a drive has host, domain, vdev, medium (or eject: true) and format", strconv.Quote(key))})
				ok = false
			}
		}
		for _, c := range []string{ColHost, ColDomain, ColVdev} {
			if !seen[c] {
				probs = append(probs, Problem{item.Line, fmt.Sprintf("the drive has no %q", c)})
				ok = false
			}
		}
		switch {
		case eject && seen[ColMedium] && row.Medium != Eject:
			probs = append(probs, Problem{item.Line, "the drive has both a medium and eject: true: keep one"})
			ok = false
		case eject:
			row.Medium = Eject
		case !seen[ColMedium]:
			probs = append(probs, Problem{item.Line, "the drive has no medium: give the image's path, or eject: true"})
			ok = false
		}
		if ok {
			rows = append(rows, row)
		}
	}
	return rows, probs
}

// Check checks rows on their own and together: every field within workflows' limits (a
// host name that is a task queue name, a domain name or domid, a vdev, an absolute medium
// path or "eject"), and no drive twice. It returns the problems found, in row order.
// Rows come back normalized: an "eject" medium becomes "".
func Check(rows []Row) []Problem {
	var probs []Problem
	first := map[string]int{}
	for i := range rows {
		r := &rows[i]
		bad := func(err error, what string) {
			probs = append(probs, Problem{r.Line, fmt.Sprintf("%s: %v", what, err)})
		}
		if err := workflows.ValidateHost(r.Host); err != nil {
			bad(err, "bad host")
		}
		if err := workflows.ValidateDomain(r.Domain); err != nil {
			bad(err, "bad domain")
		}
		if err := workflows.ValidateVdev(r.Vdev); err != nil {
			bad(err, "bad vdev")
		}
		switch {
		case strings.EqualFold(r.Medium, Eject):
			r.Medium = ""
			if r.Format != "" {
				probs = append(probs, Problem{r.Line, "an eject takes no format: leave the format empty"})
			}
		case r.Medium == "":
			probs = append(probs, Problem{r.Line, fmt.Sprintf("the medium is empty: give the image's absolute path on the host, or %q", Eject)})
		default:
			if err := workflows.ValidateMedium(r.Medium); err != nil {
				bad(err, "bad medium")
			}
		}
		if r.Format != "" {
			if err := workflows.ValidateFormat(r.Format); err != nil {
				bad(err, "bad format")
			}
		}
		if line, dup := first[r.Key()]; dup {
			probs = append(probs, Problem{r.Line, fmt.Sprintf("drive %s of %s on host %s is already in the plan at line %d: a drive can change once per batch; remove one of the lines",
				r.Vdev, r.Domain, r.Host, line)})
		} else {
			first[r.Key()] = r.Line
		}
	}
	return probs
}

// Hosts lists the hosts of rows, in order of first appearance.
func Hosts(rows []Row) []string {
	var hs []string
	seen := map[string]bool{}
	for _, r := range rows {
		if !seen[r.Host] {
			seen[r.Host] = true
			hs = append(hs, r.Host)
		}
	}
	return hs
}
