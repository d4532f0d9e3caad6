package xensim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// The control socket speaks JSON over HTTP/1.1 on DIR/control.sock:
//
//	GET  /faults   -> {"faults": Faults}
//	POST /faults   {"domain": "", "knob": "never-add-fd", "value": "true"} -> {"faults": Faults}
//	PUT  /faults   Faults -> {"faults": Faults}
//	GET  /domains  -> {"domains": [DomainInfo...]}
//	GET  /summary  -> Summary
//	GET  /media    -> MediaCounts
//	DELETE /media  -> MediaCounts (the counts before the reset)
//
// An error is a 4xx or 5xx status with {"error": "..."}.

// KnobRequest is the body of POST /faults: one knob for one guest ("" = all guests).
type KnobRequest struct {
	Domain string `json:"domain,omitempty"`
	Knob   string `json:"knob"`
	Value  string `json:"value"`
}

type faultsReply struct {
	Faults Faults `json:"faults"`
}

type domainsReply struct {
	Domains []DomainInfo `json:"domains"`
}

type errorReply struct {
	Error string `json:"error"`
}

// controlServer serves the control socket.
type controlServer struct {
	srv *http.Server
	ln  net.Listener
}

func startControl(h *Host) (*controlServer, error) {
	p := h.ControlPath()
	_ = os.Remove(p)
	ln, err := net.Listen("unix", p)
	if err != nil {
		return nil, fmt.Errorf("open control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, faultsReply{h.Faults()})
	})
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		var req KnobRequest
		if err := decodeBody(r, &req); err != nil {
			reply(w, http.StatusBadRequest, errorReply{err.Error()})
			return
		}
		if err := h.SetFault(r.Context(), req.Domain, req.Knob, req.Value); err != nil {
			reply(w, statusOf(err), errorReply{err.Error()})
			return
		}
		reply(w, http.StatusOK, faultsReply{h.Faults()})
	})
	mux.HandleFunc("PUT /faults", func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		if err := decodeBody(r, &f); err != nil {
			reply(w, http.StatusBadRequest, errorReply{err.Error()})
			return
		}
		if err := h.SetFaults(r.Context(), f); err != nil {
			reply(w, statusOf(err), errorReply{err.Error()})
			return
		}
		reply(w, http.StatusOK, faultsReply{h.Faults()})
	})
	mux.HandleFunc("GET /domains", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, domainsReply{h.Domains()})
	})
	mux.HandleFunc("GET /summary", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, h.Summary())
	})
	mux.HandleFunc("GET /media", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, h.Media())
	})
	mux.HandleFunc("DELETE /media", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, h.ResetMedia())
	})
	cs := &controlServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:  ln,
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := cs.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("control socket stopped", "err", err)
		}
	}()
	return cs, nil
}

func (c *controlServer) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.srv.Shutdown(ctx); err != nil {
		return c.srv.Close()
	}
	return nil
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrBadConfig), errors.Is(err, ErrNoSuchDomain):
		return http.StatusBadRequest
	case errors.Is(err, ErrNeedsFake), errors.Is(err, ErrNoQMP):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// maxBody bounds a request body.
const maxBody = 1 << 20

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ErrNoHost is wrapped by a Control call when no xensim answers on the folder's control
// socket.
var ErrNoHost = errors.New("no xensim runs there")

// ErrRefused is wrapped by a Control call the host refused (a bad knob or value, an unknown
// domain, a knob the guest cannot have); the message is the host's.
var ErrRefused = errors.New("refused by xensim")

// Control talks to a running xensim through DIR/control.sock. It is safe for concurrent use.
type Control struct {
	dir  string
	sock string
	hc   *http.Client
}

// NewControl returns a client for the xensim running on dir.
func NewControl(dir string) *Control {
	sock := filepath.Join(dir, "control.sock")
	return &Control{
		dir:  dir,
		sock: sock,
		hc: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		}},
	}
}

// Faults returns the knobs in force.
func (c *Control) Faults(ctx context.Context) (Faults, error) {
	var r faultsReply
	err := c.do(ctx, http.MethodGet, "/faults", nil, &r)
	return r.Faults, err
}

// SetFault sets one knob (see Host.SetFault) and returns the knobs then in force.
func (c *Control) SetFault(ctx context.Context, domain, knob, value string) (Faults, error) {
	var r faultsReply
	err := c.do(ctx, http.MethodPost, "/faults", KnobRequest{Domain: domain, Knob: knob, Value: value}, &r)
	return r.Faults, err
}

// SetFaults puts f in force (see Host.SetFaults).
func (c *Control) SetFaults(ctx context.Context, f Faults) (Faults, error) {
	var r faultsReply
	err := c.do(ctx, http.MethodPut, "/faults", f, &r)
	return r.Faults, err
}

// Domains describes the host's guests.
func (c *Control) Domains(ctx context.Context) ([]DomainInfo, error) {
	var r domainsReply
	err := c.do(ctx, http.MethodGet, "/domains", nil, &r)
	return r.Domains, err
}

// Summary describes the host.
func (c *Control) Summary(ctx context.Context) (Summary, error) {
	var s Summary
	err := c.do(ctx, http.MethodGet, "/summary", nil, &s)
	return s, err
}

// Media returns the host's medium counters (see Host.Media).
func (c *Control) Media(ctx context.Context) (MediaCounts, error) {
	var m MediaCounts
	err := c.do(ctx, http.MethodGet, "/media", nil, &m)
	return m, err
}

// ResetMedia zeroes the host's medium counters (see Host.ResetMedia) and returns them as
// they were just before.
func (c *Control) ResetMedia(ctx context.Context) (MediaCounts, error) {
	var m MediaCounts
	err := c.do(ctx, http.MethodDelete, "/media", nil, &m)
	return m, err
}

func (c *Control) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://xensim"+path, rd)
	if err != nil {
		return fmt.Errorf("control request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("reach xensim at %s (is it running with --dir %s?): %w: %w", c.sock, c.dir, err, ErrNoHost)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read reply from %s: %w", c.sock, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorReply
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %w", e.Error, ErrRefused)
		}
		return fmt.Errorf("xensim answered %s: %w", resp.Status, ErrRefused)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode reply from %s: %w", c.sock, err)
	}
	return nil
}
