package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// kind classifies a server message (docs/interop/qmp-spec.rst, "Server responses").
type kind int

const (
	kindGreeting kind = iota + 1 // {"QMP": {...}}
	kindReturn                   // {"return": ..., "id": ...}
	kindError                    // {"error": {"class", "desc"}, "id": ...}
	kindEvent                    // {"event": ..., "data": ..., "timestamp": ...}
)

func (k kind) String() string {
	switch k {
	case kindGreeting:
		return "greeting"
	case kindReturn:
		return "return"
	case kindError:
		return "error"
	case kindEvent:
		return "event"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// message is one decoded server line. Only the fields of its kind are set.
type message struct {
	kind kind
	// id is the raw "id" of a reply, nil when the reply has none.
	id json.RawMessage
	// ret is the raw "return" value of a success reply.
	ret json.RawMessage
	// err is the error of an error reply.
	err *Error
	// event is the event of an event message.
	event Event
	// version and capabilities come from a greeting.
	version      Version
	capabilities []string
}

// errNotObject is returned for a line that is valid JSON but not an object.
var errNotObject = errors.New("not a JSON object")

// parseMessage classifies one line from the server. Keys are matched exactly (QMP is case
// sensitive, encoding/json struct fields are not), and exactly one of "QMP", "return",
// "error" and "event" must be present.
func parseMessage(line []byte) (message, error) {
	line = trimJSONSpace(line)
	if len(line) == 0 || line[0] != '{' {
		if json.Valid(line) {
			return message{}, errNotObject
		}
		return message{}, errors.New("not JSON")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return message{}, fmt.Errorf("not JSON: %w", err)
	}
	var m message
	found := 0
	for _, k := range []struct {
		key  string
		kind kind
	}{{"QMP", kindGreeting}, {"return", kindReturn}, {"error", kindError}, {"event", kindEvent}} {
		if _, ok := obj[k.key]; ok {
			m.kind = k.kind
			found++
		}
	}
	switch {
	case found == 0:
		return message{}, errors.New(`object has none of "QMP", "return", "error", "event"`)
	case found > 1:
		return message{}, errors.New(`object has more than one of "QMP", "return", "error", "event"`)
	}
	if id, ok := obj["id"]; ok {
		m.id = id
	}
	switch m.kind {
	case kindGreeting:
		return parseGreeting(m, obj["QMP"])
	case kindReturn:
		m.ret = obj["return"]
	case kindError:
		var e struct {
			Class *string `json:"class"`
			Desc  *string `json:"desc"`
		}
		if err := json.Unmarshal(obj["error"], &e); err != nil {
			return message{}, fmt.Errorf("error member: %w", err)
		}
		if e.Class == nil || *e.Class == "" || e.Desc == nil {
			return message{}, errors.New(`error member lacks "class" or "desc"`)
		}
		m.err = &Error{Class: *e.Class, Desc: *e.Desc}
	case kindEvent:
		return parseEvent(m, obj)
	}
	return m, nil
}

func parseGreeting(m message, raw json.RawMessage) (message, error) {
	var g struct {
		Version *struct {
			QEMU *struct {
				Major *int `json:"major"`
				Minor *int `json:"minor"`
				Micro *int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
		Capabilities []string `json:"capabilities"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		return message{}, fmt.Errorf("greeting: %w", err)
	}
	if g.Version == nil || g.Version.QEMU == nil || g.Version.QEMU.Major == nil ||
		g.Version.QEMU.Minor == nil || g.Version.QEMU.Micro == nil {
		return message{}, errors.New("greeting lacks version.qemu.{major,minor,micro}")
	}
	q := g.Version.QEMU
	m.version = Version{Major: *q.Major, Minor: *q.Minor, Micro: *q.Micro, Package: g.Version.Package}
	m.capabilities = g.Capabilities
	return m, nil
}

func parseEvent(m message, obj map[string]json.RawMessage) (message, error) {
	if err := json.Unmarshal(obj["event"], &m.event.Name); err != nil {
		return message{}, fmt.Errorf("event name: %w", err)
	}
	if m.event.Name == "" {
		return message{}, errors.New("event with an empty name")
	}
	if d, ok := obj["data"]; ok {
		m.event.Data = d
	}
	if ts, ok := obj["timestamp"]; ok {
		var t struct {
			Seconds      int64 `json:"seconds"`
			Microseconds int64 `json:"microseconds"`
		}
		if err := json.Unmarshal(ts, &t); err != nil {
			return message{}, fmt.Errorf("event timestamp: %w", err)
		}
		// An out-of-range timestamp leaves Time zero rather than failing the connection.
		if t.Seconds >= 0 && t.Microseconds >= 0 && t.Microseconds < 1e6 {
			m.event.Time = time.Unix(t.Seconds, t.Microseconds*1000)
		}
	}
	return m, nil
}

// trimJSONSpace removes the whitespace JSON allows around a value (RFC 8259), which is less
// than bytes.TrimSpace removes.
func trimJSONSpace(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}
