package qmp

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// messageTests are lines as QEMU 7.2 sends them (the first ones verbatim) and lines it never
// sends, with how parseMessage classifies them. They also seed FuzzParseMessage.
var messageTests = []struct {
	name    string
	line    string
	kind    kind   // 0: parseMessage must fail
	id      string // raw id, "" for none
	errText string // for kindError: "Class: Desc"; for failures: part of the error
}{
	{name: "greeting", line: `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}` + "\r\n", kind: kindGreeting},
	{name: "return empty", line: `{"return": {}, "id": "cdswap-1"}` + "\r\n", kind: kindReturn, id: `"cdswap-1"`},
	{name: "return list", line: `{"return": [{"fds": [{"fd": 12, "opaque": "raw:/tmp/qx/med.raw"}], "fdset-id": 0}], "id": "query-fdsets"}`, kind: kindReturn, id: `"query-fdsets"`},
	{name: "return numeric id", line: `{"return": {}, "id": 7}`, kind: kindReturn, id: `7`},
	{name: "return object id", line: `{"return": {}, "id": {"a": [1]}}`, kind: kindReturn, id: `{"a": [1]}`},
	{name: "return null", line: `{"return": null, "id": "cdswap-2"}`, kind: kindReturn, id: `"cdswap-2"`},
	{name: "error DeviceNotFound", line: `{"id": "eject", "error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}}`, kind: kindError, id: `"eject"`, errText: "DeviceNotFound: Device 'nope' not found"},
	{name: "error without id", line: `{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'garbage'"}}`, kind: kindError, errText: "GenericError: JSON parse error, invalid keyword 'garbage'"},
	{name: "error empty desc", line: `{"error": {"class": "GenericError", "desc": ""}, "id": "x"}`, kind: kindError, id: `"x"`, errText: "GenericError: "},
	{name: "event", line: `{"timestamp": {"seconds": 1795830926, "microseconds": 406670}, "event": "DEVICE_TRAY_MOVED", "data": {"device": "ide-5632", "tray-open": true, "id": "ide-5632"}}`, kind: kindEvent},
	{name: "event without data", line: `{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}`, kind: kindEvent},
	{name: "leading spaces", line: "  \t{\"return\": {}, \"id\": \"a\"}\r\n", kind: kindReturn, id: `"a"`},

	{name: "empty", line: "", errText: "not JSON"},
	{name: "CRLF only", line: "\r\n", errText: "not JSON"},
	{name: "array", line: `[1, 2]`, errText: "not a JSON object"},
	{name: "null", line: `null`, errText: "not a JSON object"},
	{name: "number", line: `42`, errText: "not a JSON object"},
	{name: "truncated", line: `{"return": {}, "id": `, errText: "not JSON"},
	{name: "two objects", line: `{"return": {}} {"return": {}}`, errText: "not JSON"},
	{name: "no known member", line: `{"id": 5}`, errText: "none of"},
	{name: "wrong case", line: `{"Return": {}, "id": 5}`, errText: "none of"},
	{name: "return and event", line: `{"return": {}, "event": "STOP"}`, errText: "more than one"},
	{name: "error not an object", line: `{"error": "bad", "id": 1}`, errText: "error member"},
	{name: "error without desc", line: `{"error": {"class": "GenericError"}, "id": 1}`, errText: `lacks "class" or "desc"`},
	{name: "error empty class", line: `{"error": {"class": "", "desc": "x"}, "id": 1}`, errText: `lacks "class" or "desc"`},
	{name: "error class not a string", line: `{"error": {"class": 1, "desc": "x"}, "id": 1}`, errText: "error member"},
	{name: "event name empty", line: `{"event": ""}`, errText: "empty name"},
	{name: "event name number", line: `{"event": 3}`, errText: "event name"},
	{name: "event bad timestamp", line: `{"event": "STOP", "timestamp": "now"}`, errText: "timestamp"},
	{name: "greeting without version", line: `{"QMP": {}}`, errText: "lacks version"},
	{name: "greeting version not object", line: `{"QMP": {"version": 7}}`, errText: "greeting"},
	{name: "greeting without micro", line: `{"QMP": {"version": {"qemu": {"major": 7, "minor": 2}}}}`, errText: "lacks version"},
	{name: "invalid UTF-8 outside strings", line: "{\xff}", errText: "not JSON"},
}

func TestParseMessage(t *testing.T) {
	for _, tt := range messageTests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseMessage([]byte(tt.line))
			if tt.kind == 0 {
				if err == nil {
					t.Fatalf("parseMessage(%q) = %s, want an error containing %q", tt.line, m.kind, tt.errText)
				}
				if !strings.Contains(err.Error(), tt.errText) {
					t.Errorf("parseMessage(%q) = %v, want an error containing %q", tt.line, err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseMessage(%q) = %v, want %s", tt.line, err, tt.kind)
			}
			if m.kind != tt.kind {
				t.Errorf("parseMessage(%q).kind = %s, want %s", tt.line, m.kind, tt.kind)
			}
			if string(m.id) != tt.id {
				t.Errorf("parseMessage(%q).id = %s, want %s", tt.line, m.id, tt.id)
			}
			if tt.kind == kindError && m.err.Error() != tt.errText {
				t.Errorf("parseMessage(%q).err = %v, want %s", tt.line, m.err, tt.errText)
			}
		})
	}
}

func TestParseMessageFields(t *testing.T) {
	m, err := parseMessage([]byte(messageTests[0].line))
	if err != nil {
		t.Fatal(err)
	}
	want := Version{Major: 7, Minor: 2, Micro: 22, Package: "Debian 1:7.2+dfsg-7+deb12u18+b3"}
	if m.version != want {
		t.Errorf("greeting version = %+v, want %+v", m.version, want)
	}
	if len(m.capabilities) != 1 || m.capabilities[0] != "oob" {
		t.Errorf("greeting capabilities = %q, want [oob]", m.capabilities)
	}

	m, err = parseMessage([]byte(`{"timestamp": {"seconds": 1795830926, "microseconds": 406670}, "event": "DEVICE_TRAY_MOVED", "data": {"device": "ide-5632", "tray-open": true, "id": "ide-5632"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.event.Time, time.Unix(1795830926, 406670000); !got.Equal(want) {
		t.Errorf("event time = %v, want %v", got, want)
	}
	var tm TrayMoved
	if err := m.event.DecodeData(&tm); err != nil || tm != (TrayMoved{Device: "ide-5632", ID: "ide-5632", TrayOpen: true}) {
		t.Errorf("event data = %+v, %v, want ide-5632 open", tm, err)
	}

	m, err = parseMessage([]byte(`{"event": "STOP", "timestamp": {"seconds": -1, "microseconds": -1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !m.event.Time.IsZero() || m.event.Data != nil {
		t.Errorf("event with a negative timestamp = %+v, want zero Time and nil Data", m.event)
	}
	if err := m.event.DecodeData(&tm); err == nil {
		t.Errorf("DecodeData of an event without data = nil, want an error")
	}

	m, err = parseMessage([]byte(`{"return": {"fd": 12, "fdset-id": 0}, "id": "cdswap-3"}`))
	if err != nil {
		t.Fatal(err)
	}
	var info AddFDInfo
	if err := json.Unmarshal(m.ret, &info); err != nil || info != (AddFDInfo{FdsetID: 0, FD: 12}) {
		t.Errorf("return = %s decoded to %+v, %v", m.ret, info, err)
	}
}

// FuzzParseMessage checks that no line makes parseMessage panic and that what it accepts is
// consistent: exactly one kind, with that kind's fields set.
func FuzzParseMessage(f *testing.F) {
	for _, tt := range messageTests {
		f.Add([]byte(tt.line))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := parseMessage(line)
		if err != nil {
			if m.kind != 0 {
				t.Errorf("parseMessage(%q) = %v with kind %s, want the zero message", line, err, m.kind)
			}
			return
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(line, &obj) != nil {
			t.Fatalf("parseMessage(%q) accepted a line that is not a JSON object", line)
		}
		switch m.kind {
		case kindGreeting:
			if _, ok := obj["QMP"]; !ok {
				t.Errorf("parseMessage(%q) = greeting without a QMP member", line)
			}
		case kindReturn:
			if m.ret == nil {
				t.Errorf("parseMessage(%q) = return with nil ret", line)
			}
		case kindError:
			if m.err == nil || m.err.Class == "" {
				t.Errorf("parseMessage(%q) = error reply with err %v", line, m.err)
			}
		case kindEvent:
			if m.event.Name == "" {
				t.Errorf("parseMessage(%q) = event without a name", line)
			}
		default:
			t.Errorf("parseMessage(%q) = kind %d, nil error", line, m.kind)
		}
		if id, ok := obj["id"]; ok != (m.id != nil) || (ok && string(id) != string(m.id)) {
			t.Errorf("parseMessage(%q).id = %s, want %s", line, m.id, id)
		}
	})
}
