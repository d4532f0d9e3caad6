package qmptest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
)

// debian72 is the version of the QEMU the transcripts below were recorded from
// (qemu-system-x86_64 7.2.22 from Debian 12, -machine pc, one ide-cd "ide-5632").
var debian72 = qmp.Version{Major: 7, Minor: 2, Micro: 22, Package: "Debian 1:7.2+dfsg-7+deb12u18+b3"}

// TestTranscript replays requests whose replies were recorded from the real QEMU 7.2 and
// wants the fake's bytes to be identical. {dir} stands for a temporary directory holding
// a.iso (a 1 MiB raw image).
func TestTranscript(t *testing.T) {
	dir := testenv.SocketDir(t)
	writeImage(t, dir, "a.iso", 1<<20)
	_, path := Start(t, Options{Version: debian72, StrictHostDevice: true})
	ctx := testCtx(t)
	c, greeting := dialRaw(ctx, t, path)
	wantGreeting := `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}` + "\r\n"
	if greeting != wantGreeting {
		t.Fatalf("greeting = %q, want %q", greeting, wantGreeting)
	}

	tests := []struct {
		name string
		send string
		want []string
	}{
		// Before qmp_capabilities.
		{"pre-negotiation command", `{"execute": "query-version", "id": 1}`,
			[]string{`{"id": 1, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`}},
		{"pre-negotiation without id", `{"execute": "query-status"}`,
			[]string{`{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`}},
		{"pre-negotiation unknown", `{"execute": "bogus", "id": "x"}`,
			[]string{`{"id": "x", "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`}},
		{"pre-negotiation exec-oob", `{"exec-oob": "query-status", "id": 8}`,
			[]string{`{"id": 8, "error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}`}},
		{"capabilities with an object id", `{"execute":"qmp_capabilities","id":{"a":[1,2]}}`,
			[]string{`{"return": {}, "id": {"a": [1, 2]}}`}},
		{"capabilities again", `{"execute": "qmp_capabilities", "id": 5}`,
			[]string{`{"id": 5, "error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}`}},
		{"capabilities again, bad arguments", `{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'enable', expected: array"}}`}},
		{"capabilities again, bad list member", `{"execute":"qmp_capabilities","arguments":{"enable":[1]}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'enable[0]', expected: string"}}`}},

		// Queries and ids of every JSON type.
		{"query-version, float id", `{"execute": "query-version", "id": 1.5}`,
			[]string{`{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "id": 1.5}`}},
		{"query-status", `{"execute": "query-status"}`,
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}}`}},
		{"query-block, list id", `{"execute": "query-block", "id": [1]}`,
			[]string{`{"return": [{"io-status": "ok", "device": "ide-5632", "locked": false, "removable": true, "qdev": "ide-5632", "tray_open": false, "type": "unknown"}], "id": [1]}`}},
		{"query-fdsets, bool id", `{"execute": "query-fdsets", "id": true}`,
			[]string{`{"return": [], "id": true}`}},
		{"null id", `{"execute":"query-status","id":null}`,
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}, "id": null}`}},
		{"unicode id", `{"execute":"query-status","id":"\u00e9\ud83d\ude00 /"}`,
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}, "id": "\u00E9\uD83D\uDE00 /"}`}},
		{"NUL in id", `{"execute":"query-status","id":"a\u0000b"}`,
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}, "id": "a\u0000b"}`}},
		{"single-quoted strings", `{'execute':'query-status','id':'sq'}`,
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}, "id": "sq"}`}},
		{"uint64 id", `{"execute":"query-status","id":12345678901234567890}`,
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}, "id": 12345678901234567890}`}},
		{"negative beyond int64 id", `{"execute":"query-status","id":-12345678901234567890}`,
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}, "id": -1.2345678901234567e+19}`}},
		{"exponent id", `{"execute":"query-status","id":1e3}`,
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}, "id": 1000}`}},
		{"unknown command", `{"execute": "nope", "id": "n"}`,
			[]string{`{"id": "n", "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}`}},

		// Framing: QEMU counts braces, it does not read lines.
		{"two commands on one line", `{"execute":"query-status","id":1}{"execute":"query-version","id":2}`, []string{
			`{"return": {"status": "running", "singlestep": false, "running": true}, "id": 1}`,
			`{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "id": 2}`}},
		{"one command on two lines", "{\"execute\":\"query-status\",\r\n\"id\":7}",
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}, "id": 7}`}},
		{"empty line first", "\r\n{\"execute\":\"query-status\",\"id\":9}",
			[]string{`{"return": {"status": "running", "singlestep": false, "running": true}, "id": 9}`}},
		{"junk after a command", `{"execute":"query-status","id":1}junk`, []string{
			`{"return": {"status": "running", "singlestep": false, "running": true}, "id": 1}`,
			`{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'junk'"}}`}},

		// Malformed requests.
		{"unexpected member", `{"foo": 1}`,
			[]string{`{"error": {"class": "GenericError", "desc": "QMP input member 'foo' is unexpected"}}`}},
		{"not an object", `[1]`,
			[]string{`{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}`}},
		{"empty array", `[]`,
			[]string{`{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}`}},
		{"number", `123`,
			[]string{`{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}`}},
		{"string", `"str"`,
			[]string{`{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}`}},
		{"garbage", `garbage`,
			[]string{`{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'garbage'"}}`}},
		{"execute not a string", `{"execute": 5, "id": 3}`,
			[]string{`{"id": 3, "error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}}`}},
		{"arguments not an object", `{"execute":"query-status","arguments":[], "id": 4}`,
			[]string{`{"id": 4, "error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}}`}},
		{"arguments null", `{"execute":"query-status", "arguments": null}`,
			[]string{`{"error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}}`}},
		{"argument for a command without", `{"execute":"query-status","arguments":{"x":1}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}}`}},
		{"extra member", `{"execute":"query-status","id":1,"extra":2}`,
			[]string{`{"id": 1, "error": {"class": "GenericError", "desc": "QMP input member 'extra' is unexpected"}}`}},
		{"no execute", `{}`,
			[]string{`{"error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}`}},
		{"only an id", `{"id": 5}`,
			[]string{`{"id": 5, "error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}`}},
		{"duplicate key", `{"execute":"query-status","execute":"query-version"}`,
			[]string{`{"error": {"class": "GenericError", "desc": "JSON parse error, duplicate key"}}`}},
		{"missing colon", `{"execute" "x"}`,
			[]string{`{"error": {"class": "GenericError", "desc": "JSON parse error, missing : in object pair"}}`}},
		{"trailing comma", `{"execute":"query-status",}`,
			[]string{`{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}`}},
		{"stray brace", `}`,
			[]string{`{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}`}},
		{"0xFF", "\xff",
			[]string{`{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}`}},
		{"0xFF inside an object", "{\"execute\": \xff}", []string{
			`{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\uFFFD'"}}`,
			`{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}`}},
		{"invalid UTF-8", "{\"execute\":\"query-status\",\"id\":\"\xc3\"}",
			[]string{`{"error": {"class": "GenericError", "desc": "JSON parse error, invalid UTF-8 sequence in string"}}`}},
		{"control character in a string", "{\"execute\":\"query-status\",\"id\":\"\x01\"}", []string{
			`{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\"\u0001'"}}`,
			`{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}`}},

		// eject.
		{"eject unknown id", `{"execute": "eject", "arguments": {"id": "x"}}`,
			[]string{`{"error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}`}},
		{"eject unknown device", `{"execute": "eject", "arguments": {"device": "x"}}`,
			[]string{`{"error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}`}},
		{"eject neither", `{"execute": "eject", "arguments": {}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Need exactly one of 'device' and 'id'"}}`}},
		{"eject both", `{"execute": "eject", "arguments": {"id": "ide-5632", "device": "ide-5632"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Need exactly one of 'device' and 'id'"}}`}},
		{"eject force not a bool", `{"execute":"eject","arguments":{"id":"ide-5632","force":1}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'force', expected: boolean"}}`}},
		{"eject read-only-mode", `{"execute":"eject","arguments":{"id":"ide-5632","read-only-mode":"x"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Parameter 'read-only-mode' is unexpected"}}`}},

		// blockdev-change-medium.
		{"change: missing file", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}/nonexist.iso"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Could not open '{dir}/nonexist.iso': No such file or directory"}}`}},
		{"change: missing file, raw", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}/nonexist.iso", "format": "raw"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Could not open '{dir}/nonexist.iso': No such file or directory"}}`}},
		{"change: unknown driver", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}/a.iso", "format": "bogus"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Unknown driver 'bogus'"}}`}},
		{"change: host_device on a file", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}/a.iso", "format": "host_device"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "'host_device' driver requires '{dir}/a.iso' to be either a character or block device"}}`}},
		{"change: host_cdrom on a file", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}/a.iso", "format": "host_cdrom"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "'host_cdrom' driver requires '{dir}/a.iso' to be either a character or block device"}}`}},
		{"change: qcow2 on raw", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}/a.iso", "format": "qcow2"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Image is not in qcow2 format"}}`}},
		{"change: a directory", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}", "format": "raw"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "'file' driver requires '{dir}' to be a regular file"}}`}},
		{"change: empty name", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "", "format": "raw"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "The 'file' block driver requires a file name"}}`}},
		{"change: no such fd set", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "/dev/fdset/9", "format": "raw"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Could not dup FD for /dev/fdset/9 flags 0: No such file or directory"}}`}},
		{"change: bad fd set name", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "/dev/fdset/x", "format": "raw"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Could not parse fdset /dev/fdset/x"}}`}},
		{"change: bad read-only-mode", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}/a.iso", "format": "raw", "read-only-mode": "bogus"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Parameter 'read-only-mode' does not accept value 'bogus'"}}`}},
		{"change: read-only-mode not a string", `{"execute":"blockdev-change-medium","arguments":{"id":"ide-5632","filename":"{dir}/a.iso","read-only-mode":5}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'read-only-mode', expected: string"}}`}},
		{"change: no filename", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "format": "raw"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Parameter 'filename' is missing"}}`}},
		{"change: no id", `{"execute": "blockdev-change-medium", "arguments": {"filename": "{dir}/a.iso"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Need exactly one of 'device' and 'id'"}}`}},
		{"change: unknown id", `{"execute": "blockdev-change-medium", "arguments": {"id": "nope", "filename": "{dir}/a.iso"}}`,
			[]string{`{"error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}}`}},
		{"change: extra argument", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}/a.iso", "extra": 1}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Parameter 'extra' is unexpected"}}`}},
		{"change: id not a string", `{"execute": "blockdev-change-medium", "arguments": {"id": 5, "filename": "{dir}/a.iso"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'id', expected: string"}}`}},
		{"change: force not a bool", `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "{dir}/a.iso", "force": "yes"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'force', expected: boolean"}}`}},

		// fd sets.
		{"add-fd without a descriptor", `{"execute": "add-fd", "arguments": {}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}`}},
		{"add-fd opaque not a string", `{"execute":"add-fd","arguments":{"opaque":5}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'opaque', expected: string"}}`}},
		{"add-fd id beyond int64", `{"execute":"add-fd","arguments":{"fdset-id":9223372036854775808}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'fdset-id', expected: integer"}}`}},
		{"remove-fd unknown set", `{"execute": "remove-fd", "arguments": {"fdset-id": 42}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "File descriptor named 'fdset-id:42' not found"}}`}},
		{"remove-fd unknown set and fd", `{"execute": "remove-fd", "arguments": {"fdset-id": 42, "fd": 3}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "File descriptor named 'fdset-id:42, fd:3' not found"}}`}},
		{"remove-fd without set", `{"execute": "remove-fd", "arguments": {}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Parameter 'fdset-id' is missing"}}`}},
		{"remove-fd string id", `{"execute":"remove-fd","arguments":{"fdset-id":"1"}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'fdset-id', expected: integer"}}`}},
		{"remove-fd float id", `{"execute":"remove-fd","arguments":{"fdset-id":1.5}}`,
			[]string{`{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'fdset-id', expected: integer"}}`}},
	}
	for _, tt := range tests {
		send := strings.ReplaceAll(tt.send, "{dir}", dir)
		if err := c.write([]byte(send+"\r\n"), nil); err != nil {
			t.Fatalf("%s: write: %v", tt.name, err)
		}
		for _, want := range tt.want {
			want = strings.ReplaceAll(want, "{dir}", dir) + "\r\n"
			if got := c.nextReply(); got != want {
				t.Errorf("%s: %s\n got %q\nwant %q", tt.name, send, got, want)
			}
		}
	}
	if evs := c.takeEvents(); len(evs) != 0 {
		t.Errorf("events after failed commands = %v, want none", evs)
	}
}

// TestTranscriptMedium checks the byte shape of a successful change, its events and
// query-block's "inserted", against QEMU 7.2's (node name aside).
func TestTranscriptMedium(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 1<<20)
	_, path := Start(t, Options{Version: debian72})
	c := negotiate(testCtx(t), t, path)

	send := `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "` + iso + `", "format": "raw"}}`
	if err := c.write([]byte(send+"\r\n"), nil); err != nil {
		t.Fatal(err)
	}
	event := regexp.MustCompile(`^\{"timestamp": \{"seconds": \d+, "microseconds": \d+\}, "event": "DEVICE_TRAY_MOVED", "data": \{"device": "ide-5632", "tray-open": (true|false), "id": "ide-5632"\}\}\r\n$`)
	for _, want := range []string{"true", "false"} {
		line, err := c.readLine()
		if err != nil {
			t.Fatal(err)
		}
		m := event.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("event line %q does not have QEMU's shape", line)
		}
		if m[1] != want {
			t.Errorf("tray-open = %s, want %s (tray opens, then closes)", m[1], want)
		}
	}
	if got, want := c.nextReply(), "{\"return\": {}}\r\n"; got != want {
		t.Fatalf("reply = %q, want %q", got, want)
	}

	got := c.rawLine(`{"execute": "query-block"}` + "\r\n")
	got = regexp.MustCompile(`"#block\d+"`).ReplaceAllString(got, `"#blockN"`)
	want := `{"return": [{"io-status": "ok", "device": "ide-5632", "locked": false, "removable": true, "inserted": {"iops_rd": 0, "detect_zeroes": "off", "image": {"virtual-size": 1048576, "filename": "` + iso + `", "format": "raw", "actual-size": 0, "dirty-flag": false}, "iops_wr": 0, "ro": true, "node-name": "#blockN", "backing_file_depth": 0, "drv": "raw", "iops": 0, "bps_wr": 0, "write_threshold": 0, "encrypted": false, "bps": 0, "bps_rd": 0, "cache": {"no-flush": false, "direct": false, "writeback": true}, "file": "` + iso + `"}, "qdev": "ide-5632", "tray_open": false, "type": "unknown"}]}` + "\r\n"
	if got != want {
		t.Errorf("query-block\n got %q\nwant %q", got, want)
	}

	// An eject of the loaded drive: one event, then the reply; ejecting again is a no-op.
	got = c.rawLine(`{"execute": "eject", "arguments": {"id": "ide-5632"}}` + "\r\n")
	if got != "{\"return\": {}}\r\n" {
		t.Errorf("eject reply = %q", got)
	}
	if m := trayMoves(c.takeEvents(), "ide-5632"); len(m) != 1 || !m[0] {
		t.Errorf("eject tray moves = %v, want [true]", m)
	}
	c.rawLine(`{"execute": "eject", "arguments": {"id": "ide-5632", "force": true}}` + "\r\n")
	if evs := c.takeEvents(); len(evs) != 0 {
		t.Errorf("second eject events = %v, want none (the tray is already open)", evs)
	}
}

// TestTranscriptQcow2 checks qcow2 probing and the qcow2 image info shape, using a header
// that qemu-img 7.2 writes for "qemu-img create -f qcow2 c.qcow2 4M".
func TestTranscriptQcow2(t *testing.T) {
	dir := testenv.SocketDir(t)
	p := filepath.Join(dir, "c.qcow2")
	if err := os.WriteFile(p, qcow2Header(4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, path := Start(t, Options{Version: debian72})
	c := negotiate(testCtx(t), t, path)
	c.rawLine(`{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "` + p + `"}}` + "\r\n")
	got := c.rawLine(`{"execute": "query-block"}` + "\r\n")
	image := regexp.MustCompile(`"image": \{.*?"dirty-flag": false\}`).FindString(got)
	image = regexp.MustCompile(`"actual-size": \d+`).ReplaceAllString(image, `"actual-size": N`)
	want := `"image": {"virtual-size": 4194304, "filename": "` + p + `", "cluster-size": 65536, "format": "qcow2", "actual-size": N, "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "compression-type": "zlib", "lazy-refcounts": false, "refcount-bits": 16, "corrupt": false, "extended-l2": false}}, "dirty-flag": false}`
	if image != want {
		t.Errorf("qcow2 image info\n got %s\nwant %s", image, want)
	}
	if !strings.Contains(got, `"drv": "qcow2"`) {
		t.Errorf("query-block = %s, want drv qcow2 (probed)", got)
	}
}

// qcow2Header returns a version 3 qcow2 header for an empty image of size bytes, with the
// fields qemu-img sets (cluster_bits 16, refcount_order 4, header_length 112).
func qcow2Header(size uint64) []byte {
	h := make([]byte, 112)
	put32 := func(off int, v uint32) {
		h[off], h[off+1], h[off+2], h[off+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	}
	put64 := func(off int, v uint64) { put32(off, uint32(v>>32)); put32(off+4, uint32(v)) }
	put32(0, qcow2Magic)
	put32(4, 3)
	put32(20, 16)
	put64(24, size)
	put32(96, 4)
	put32(100, 112)
	return h
}

// TestTranscriptOOB covers the out-of-band capability, recorded like TestTranscript.
func TestTranscriptOOB(t *testing.T) {
	_, path := Start(t, Options{Version: debian72})
	c, _ := dialRaw(testCtx(t), t, path)
	tests := []struct{ name, send, want string }{
		{"unknown capability", `{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}}`,
			`{"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'foo'"}}`},
		{"enable oob", `{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}`, `{"return": {}}`},
		{"exec-oob", `{"exec-oob":"query-status","id":8}`,
			`{"id": 8, "error": {"class": "GenericError", "desc": "The command query-status does not support OOB"}}`},
		{"exec-oob of an unknown command", `{"exec-oob":"nope"}`,
			`{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}`},
		{"both", `{"exec-oob":"query-status","execute":"query-status"}`,
			`{"error": {"class": "GenericError", "desc": "QMP input member 'execute' clashes with 'exec-oob'"}}`},
	}
	for _, tt := range tests {
		if got := c.rawLine(tt.send + "\r\n"); got != tt.want+"\r\n" {
			t.Errorf("%s: %s\n got %q\nwant %q", tt.name, tt.send, got, tt.want)
		}
	}
}
