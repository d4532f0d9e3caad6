package workflows

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cdswap/cdswap/internal/termtext"
)

// Limits on a ChangeMediumInput, checked by the CLI before it starts anything and again by
// ChangeMedium (Validate), so that a request from another starter is held to them too.
const (
	// MaxHost bounds a host name: it is part of a task queue name and of workflow ids.
	MaxHost = 64
	// MaxDomain bounds a guest name: xl's domain names are at most 64 bytes.
	MaxDomain = 64
	// MaxVdev bounds a drive name (hdc, xvdc, sdc...).
	MaxVdev = 16
	// MaxMedium is Linux's PATH_MAX less its terminating NUL: no longer path can be opened.
	MaxMedium = 4095
	// MaxRequester, MaxReason and MaxTicket bound the audit fields, which every listing
	// prints.
	MaxRequester = 256
	MaxReason    = 1024
	MaxTicket    = 128
	// MaxBatchID bounds a batch id: it is a search attribute and prefixes its swaps' ids.
	MaxBatchID = 200
	// MaxKeyword is Temporal's size limit of a Keyword search attribute's value (2,048
	// bytes of its JSON payload, quotes and escapes included): CdswapMedium keeps at most
	// that much of the path (KeywordMedium).
	MaxKeyword = 2048
)

// changeValidateLimits is the change id (workflow.GetVersion) of Validate in ChangeMedium's
// validate: runs started before it skip it on replay, so that an old request beyond the
// limits replays as it ran. A new run does not ask it: version impliedLimitsVersion of
// changeLocalSteps, which the run records first, implies the limits and saves the run a
// marker and a search-attribute upsert. (The other change ids are in options.go.)
const changeValidateLimits = "validate-input-limits"

// Fields of a request, as InputError names them: the CLI's flag names without the "--".
const (
	FieldHost      = "host"
	FieldDomain    = "domain"
	FieldVdev      = "vdev"
	FieldMedium    = "medium"
	FieldFormat    = "format"
	FieldRequester = "requester"
	FieldReason    = "reason"
	FieldTicket    = "ticket"
	FieldBatch     = "batch"
	// FieldRequesterSource names ChangeMediumInput.RequesterSource.
	FieldRequesterSource = "requester-source"
)

// InputError is a field of a request that breaks a limit of this file.
type InputError struct {
	// Field is one of the Field* names.
	Field string
	// Problem says what is wrong, to follow the field's name: "is 200 bytes long: at most
	// 128 are allowed".
	Problem string
}

func (e *InputError) Error() string { return e.Field + " " + e.Problem }

// Validate checks a ChangeMediumInput against the limits: identifiers (host, domain, vdev,
// format) of bounded length that fit a task queue name and a workflow id, a medium path of
// at most MaxMedium bytes, bounded audit fields, all of it valid UTF-8 (Temporal's JSON
// would silently turn other bytes into U+FFFD, and so name another file) and without control
// characters (only the reason may hold line breaks and tabs). It returns an *InputError.
// Validate does not check what only the host can (the path's existence, the roots).
func Validate(in ChangeMediumInput) error {
	checks := []error{
		ValidateHost(in.Host),
		ValidateDomain(in.Domain),
		ValidateVdev(in.Vdev),
		ValidateMedium(in.Medium),
		ValidateAudit(in.Requester, in.Reason, in.Ticket),
		checkText(FieldBatch, in.BatchID, MaxBatchID, false),
		checkRequesterSource(in.RequesterSource),
	}
	if in.Format != "" {
		checks = append(checks, ValidateFormat(in.Format))
	}
	return firstError(checks...)
}

// ValidateAudit checks who asked and why, as Validate does for a swap and FleetSwap for a
// batch and its updates: a requester and a ticket on one line, a reason of lines, each within
// its limit; empty is allowed.
func ValidateAudit(requester, reason, ticket string) error {
	return firstError(
		checkText(FieldRequester, requester, MaxRequester, false),
		checkText(FieldReason, reason, MaxReason, true),
		checkText(FieldTicket, ticket, MaxTicket, false),
	)
}

// firstError returns the first of errs that is not nil.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// ValidateFormat checks a format name as Validate does: an identifier of at most MaxVdev
// characters (which formats a host takes is the host's to say).
func ValidateFormat(format string) error { return checkName(FieldFormat, format, MaxVdev) }

// ValidateHost checks a host name: 1 to MaxHost characters of [A-Za-z0-9._-], which fit a
// task queue name, a workflow id and a visibility query as they are.
func ValidateHost(host string) error { return checkName(FieldHost, host, MaxHost) }

// ValidateVdev checks a drive name: 1 to MaxVdev characters of [A-Za-z0-9._-].
func ValidateVdev(vdev string) error { return checkName(FieldVdev, vdev, MaxVdev) }

// ValidateDomain checks a guest as named to the CLI: a domid, or a name of 1 to MaxDomain
// bytes of valid UTF-8 without control characters.
func ValidateDomain(domain string) error {
	if _, err := strconv.ParseUint(domain, 10, 32); err == nil {
		return nil
	}
	if domain == "" {
		return &InputError{FieldDomain, "is empty: give the guest's name or domid"}
	}
	if err := checkText(FieldDomain, domain, MaxDomain, false); err != nil {
		return err
	}
	return checkReplacement(FieldDomain, domain)
}

// checkReplacement refuses U+FFFD in a name: it is what Temporal's JSON makes of bytes that
// are not UTF-8, so a starter that did not check may have sent another name than it meant,
// and a file of that name would be taken for the one asked.
func checkReplacement(field, s string) error {
	if strings.ContainsRune(s, utf8.RuneError) {
		return &InputError{field, fmt.Sprintf("%s holds U+FFFD, the replacement for bytes that were not UTF-8: give the name in UTF-8", strconv.QuoteToASCII(s))}
	}
	return nil
}

// ValidateMedium checks a medium path ("" is an eject): absolute, at most MaxMedium bytes,
// valid UTF-8, no control characters.
func ValidateMedium(medium string) error {
	if medium == "" {
		return nil
	}
	if err := checkText(FieldMedium, medium, MaxMedium, false); err != nil {
		return err
	}
	if err := checkReplacement(FieldMedium, medium); err != nil {
		return err
	}
	if !path.IsAbs(medium) {
		return &InputError{FieldMedium, fmt.Sprintf("%s is not an absolute path: give the image's full path on the host", strconv.Quote(medium))}
	}
	return nil
}

// ValidateText checks a text field the CLI passes on (a cancel's reason, a swap id): at
// most limit bytes of valid UTF-8 without control characters, other than line breaks and tabs
// if lines is set.
func ValidateText(field, s string, limit int, lines bool) error {
	return checkText(field, s, limit, lines)
}

// checkName checks an identifier: 1 to limit characters of [A-Za-z0-9._-].
func checkName(field, s string, limit int) error {
	switch {
	case s == "":
		return &InputError{field, "is empty"}
	case len(s) > limit:
		return &InputError{field, fmt.Sprintf("is %d bytes long: at most %d are allowed", len(s), limit)}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			continue
		}
		return &InputError{field, fmt.Sprintf("%s holds %s: only letters, digits, '.', '_' and '-' are allowed",
			strconv.Quote(s), strconv.QuoteToASCII(s[i:i+1+countCont(s[i+1:])]))}
	}
	return nil
}

// countCont counts the UTF-8 continuation bytes at the start of s, so that a refusal quotes
// a whole character.
func countCont(s string) int {
	n := 0
	for n < len(s) && n < 3 && s[n]&0xc0 == 0x80 {
		n++
	}
	return n
}

// checkText checks free text: at most limit bytes, valid UTF-8, no control characters
// (lines allows '\n', '\r' and '\t').
func checkText(field, s string, limit int, lines bool) error {
	if len(s) > limit {
		return &InputError{field, fmt.Sprintf("is %d bytes long: at most %d are allowed", len(s), limit)}
	}
	if !utf8.ValidString(s) {
		return &InputError{field, fmt.Sprintf("%s is not valid UTF-8: give it in UTF-8 (a path in another encoding cannot be passed on unchanged)", strconv.QuoteToASCII(s))}
	}
	for _, r := range s {
		if lines && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		if termtext.IsUnsafe(r) {
			return &InputError{field, fmt.Sprintf("%s holds the control character %s: remove it", strconv.QuoteToASCII(s), strconv.QuoteRuneToASCII(r))}
		}
	}
	return nil
}

// KeywordMedium is the part of medium that fits the CdswapMedium search attribute: the
// whole path if its JSON payload fits MaxKeyword bytes, else its beginning, cut at a
// character boundary and ending in "…". The run's input keeps the whole path.
func KeywordMedium(medium string) string {
	if jsonSize(medium) <= MaxKeyword {
		return medium
	}
	const mark = "…"
	size := jsonSize(mark) // the quotes and the mark
	for i, r := range medium {
		size += jsonSize(string(r)) - 2
		if size > MaxKeyword {
			return medium[:i] + mark
		}
	}
	return medium
}

// jsonSize is the size of s encoded as a JSON string, as Temporal's payload converter
// encodes it.
//
// It counts as encoding/json writes a string (quotes; \" \\ \n \r \t \b \f; \u00XX for other
// control characters, for <, > and & and for U+2028 and U+2029; \ufffd for a byte that is not
// UTF-8) without calling it, since a workflow (FleetSwap, through StartAttributes) may not
// use reflection-based formatting; TestJSONSize checks it against encoding/json.
func jsonSize(s string) int {
	n := 2 // the quotes
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t' || r == '\b' || r == '\f':
			n += 2
		case r < 0x20 || r == '<' || r == '>' || r == '&' || r == 0x2028 || r == 0x2029:
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
