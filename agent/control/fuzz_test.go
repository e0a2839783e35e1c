package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/natganker/natganker/agent"
)

// recordingController remembers the groups of the last action and answers every call.
type recordingController struct {
	mu     sync.Mutex
	calls  int
	groups []string
}

func (r *recordingController) record(groups []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.groups = groups
}

func (r *recordingController) Members(context.Context) ([]agent.MemberView, error) {
	r.record(nil)
	return []agent.MemberView{{Name: "i-a", Self: true}}, nil
}

func (r *recordingController) Status(context.Context) (agent.StatusView, error) {
	r.record(nil)
	return agent.StatusView{Node: "i-a"}, nil
}

func (r *recordingController) act(groups []string) (agent.ActionResult, error) {
	r.record(groups)
	for _, g := range groups {
		if g == "unknown" {
			return agent.ActionResult{}, agent.ErrUnknownGroup
		}
	}
	return agent.ActionResult{Groups: groups, Message: "done"}, nil
}

func (r *recordingController) Yield(_ context.Context, g []string) (agent.ActionResult, error) {
	return r.act(g)
}

func (r *recordingController) Resume(_ context.Context, g []string) (agent.ActionResult, error) {
	return r.act(g)
}

func (r *recordingController) Takeover(_ context.Context, g []string) (agent.ActionResult, error) {
	return r.act(g)
}

// fuzzRoutes are the requests FuzzServerRequest sends, chosen by the fuzzer's route byte.
var fuzzRoutes = []struct {
	method, path string
	action       bool
}{
	{"GET", pathMembers, false},
	{"GET", pathStatus, false},
	{"POST", pathYield, true},
	{"POST", pathResume, true},
	{"POST", pathTakeover, true},
	{"POST", pathMembers, false}, // wrong method
	{"GET", "/v1/nowhere", false},
}

// FuzzServerRequest sends arbitrary bodies, from arbitrary users, to every route of the
// server's handler. Whatever arrives, the server answers JSON, refuses users it does not
// allow before anything else, and calls the agent only with exactly the groups the body
// names, in a body it accepted whole.
func FuzzServerRequest(f *testing.F) {
	f.Add(uint8(4), uint32(0), []byte(`{"groups":["az-a","az-b"]}`))
	f.Add(uint8(2), uint32(0), []byte(``))
	f.Add(uint8(3), uint32(0), []byte(`{"groups":null}`))
	f.Add(uint8(4), uint32(0), []byte(`{"groups":["unknown"]}`))
	f.Add(uint8(4), uint32(0), []byte(`{"group":["az-a"]}`))
	f.Add(uint8(4), uint32(0), []byte(`{} {}`))
	f.Add(uint8(4), uint32(1000), []byte(`{"groups":["az-a"]}`))
	f.Add(uint8(0), uint32(0), []byte(`ignored`))
	f.Add(uint8(6), uint32(0), []byte(`{}`))
	rec := &recordingController{}
	s := NewServer(rec, "/nonexistent/agent.sock", nil, AllowUIDs(0))
	handler := s.guard(s.routes())
	f.Fuzz(func(t *testing.T, route uint8, uid uint32, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		rec.mu.Lock()
		rec.calls, rec.groups = 0, nil
		rec.mu.Unlock()

		req := httptest.NewRequest(rt.method, "http://natganker"+rt.path, bytes.NewReader(body))
		req = req.WithContext(context.WithValue(req.Context(), peerKey{}, peer{cred: &unix.Ucred{Uid: uid, Pid: 1}}))
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, req)

		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("content type %q", ct)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("answer is not JSON: %q", w.Body.String())
		}
		rec.mu.Lock()
		calls, got := rec.calls, rec.groups
		rec.mu.Unlock()
		if uid != 0 {
			if w.Code != http.StatusForbidden || calls != 0 {
				t.Fatalf("uid %d: status %d, %d calls; want 403 and none", uid, w.Code, calls)
			}
			return
		}
		if w.Code != http.StatusOK {
			var e errorResponse
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("status %d with body %q: want an error message", w.Code, w.Body.String())
			}
		}
		if !rt.action {
			return
		}
		// What a strict reading of the body gives: one JSON object with only "groups", or
		// nothing at all.
		var want groupsRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err := dec.Decode(&want)
		valid := (err == nil || errors.Is(err, io.EOF)) && !dec.More()
		if valid != (calls == 1) {
			t.Fatalf("body %q (valid %v): the agent was called %d times; status %d", body, valid, calls, w.Code)
		}
		if calls == 1 && !reflect.DeepEqual(got, want.Groups) {
			t.Fatalf("agent got groups %q, want %q", got, want.Groups)
		}
		if !valid && w.Code != http.StatusBadRequest {
			t.Fatalf("invalid body %q answered %d, want 400", body, w.Code)
		}
	})
}

// roundTripFunc answers the client's requests without a socket.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// FuzzClientAnswer hands the client arbitrary answers from the agent. The client must never
// crash, must accept exactly the 200 answers that decode, and must turn every other answer
// into a bounded error that prints nothing a terminal would obey (escape sequences,
// bidirectional overrides).
func FuzzClientAnswer(f *testing.F) {
	f.Add(uint8(0), 200, []byte(`[{"name":"i-a","self":true}]`))
	f.Add(uint8(1), 200, []byte(`{"node":"i-a","groups":[]}`))
	f.Add(uint8(2), 200, []byte(`{"groups":["az-a"],"message":"takeover requested"}`))
	f.Add(uint8(2), 400, []byte(`{"error":"unknown group \"x\"","code":"unknown_group"}`))
	f.Add(uint8(1), 500, []byte(`{"error":"describe addresses: \u001b[2J\u202eboom"}`))
	f.Add(uint8(0), 403, []byte(`{"error":"refused","code":"user_refused","uid":1000}`))
	f.Add(uint8(0), 403, []byte(`{"error":"refused","code":"user_refused"}`))
	f.Add(uint8(0), 502, []byte("<html>\x1b]0;owned\x07</html>"))
	f.Add(uint8(1), 200, []byte(`{"node":`))
	f.Fuzz(func(t *testing.T, op uint8, status int, body []byte) {
		if status < 100 || status > 599 {
			status = 100 + (status%500+500)%500
		}
		c := NewClient("/nonexistent/agent.sock")
		c.http = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			return &http.Response{
				StatusCode: status,
				Status:     strconv.Itoa(status) + " " + http.StatusText(status),
				Header:     http.Header{"Content-Type": {"application/json"}},
				Body:       io.NopCloser(bytes.NewReader(body)),
				Request:    r,
			}, nil
		})}
		ctx := context.Background()
		var err error
		var decodes bool
		switch op % 3 {
		case 0:
			_, err = c.Members(ctx)
			decodes = json.Unmarshal(body, new([]agent.MemberView)) == nil
		case 1:
			_, err = c.Status(ctx)
			decodes = json.Unmarshal(body, new(agent.StatusView)) == nil
		default:
			_, err = c.Takeover(ctx, []string{"az-a"})
			decodes = json.Unmarshal(body, new(agent.ActionResult)) == nil
		}
		if status == http.StatusOK {
			if (err == nil) != decodes {
				t.Fatalf("200 answer %q: err = %v, decodes %v", body, err, decodes)
			}
		} else if err == nil {
			t.Fatalf("status %d answered no error", status)
		}
		if err == nil {
			return
		}
		var re *RemoteError
		var pe *PermissionError
		switch {
		case errors.As(err, &pe):
			if status != http.StatusForbidden {
				t.Fatalf("status %d gave a permission error", status)
			}
		case errors.As(err, &re):
			if re.StatusCode != status {
				t.Fatalf("remote error status %d, answer had %d", re.StatusCode, status)
			}
		case status != http.StatusOK:
			t.Fatalf("status %d: err %T %v, want a RemoteError", status, err, err)
		}
		msg := err.Error()
		if len(msg) > maxMessage+100 {
			t.Fatalf("error of %d bytes", len(msg))
		}
		if !utf8.ValidString(msg) {
			t.Fatalf("error is not UTF-8: %q", msg)
		}
		if i := strings.IndexFunc(msg, func(r rune) bool { return r != '\n' && r != '\t' && !unicode.IsPrint(r) }); i >= 0 {
			t.Fatalf("error holds an unprintable character at %d: %q", i, msg)
		}
	})
}
