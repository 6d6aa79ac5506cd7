package zenodotest

import (
	"encoding/json"
	"time"
)

// Request is one entry of the request log, recorded when the request
// completes (also when a fault cut it).
type Request struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	// Query is the raw query, with any access_token value redacted.
	Query string `json:"query,omitempty"`
	// Range is the request's Range header.
	Range string `json:"range,omitempty"`
	// Status is the status sent; 0 when the connection was dropped before
	// any answer, 499 when the client left during the latency.
	Status int `json:"status"`
	// Bytes counts the response body bytes written.
	Bytes int64     `json:"bytes"`
	Time  time.Time `json:"time"`
}

func (s *Server) logRequest(e Request) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if len(s.reqs) >= s.reqLogLimit {
		n := copy(s.reqs, s.reqs[len(s.reqs)-s.reqLogLimit+1:])
		s.reqs = s.reqs[:n]
	}
	s.reqs = append(s.reqs, e)
	if s.reqLogW != nil {
		b, err := json.Marshal(e)
		if err == nil {
			b = append(b, '\n')
			if _, err := s.reqLogW.Write(b); err != nil {
				s.logf("zenodotest: writing the request log: %v", err)
			}
		}
	}
	s.logf("zenodotest: %s %s %q range=%q -> %d (%d bytes)", e.Method, e.Path, e.Query, e.Range, e.Status, e.Bytes)
}

// Requests returns a copy of the request log, oldest first.
func (s *Server) Requests() []Request {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// ResetRequests empties the request log.
func (s *Server) ResetRequests() {
	s.logMu.Lock()
	s.reqs = nil
	s.logMu.Unlock()
}
