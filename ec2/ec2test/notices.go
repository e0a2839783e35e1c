package ec2test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// NoticeIMDS is a small IMDSv2 server for tests of the notice poller: it hands out a token on
// PUT /latest/api/token, refuses metadata requests without it (401, as EC2 does) and answers
// the paths the test sets, 404 for the others.
type NoticeIMDS struct {
	// Endpoint is the server's base URL.
	Endpoint string

	srv   *httptest.Server
	mu    sync.Mutex
	paths map[string]noticeAnswer
	gets  map[string]int
	// tokenless counts metadata requests that came without a valid token.
	tokenless int
}

type noticeAnswer struct {
	status int
	body   string
}

const noticeToken = "test-token-AQAEAFo"

// StartNoticeIMDS starts a NoticeIMDS for the duration of the test.
func StartNoticeIMDS(t testing.TB) *NoticeIMDS {
	t.Helper()
	m := &NoticeIMDS{paths: map[string]noticeAnswer{}, gets: map[string]int{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	m.Endpoint = m.srv.URL
	t.Cleanup(m.srv.Close)
	return m
}

// Set makes path (under /latest/meta-data/) answer body with status 200.
func (m *NoticeIMDS) Set(path, body string) { m.SetStatus(path, http.StatusOK, body) }

// SetStatus makes path answer status with body.
func (m *NoticeIMDS) SetStatus(path string, status int, body string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.paths[path] = noticeAnswer{status: status, body: body}
}

// Clear makes path answer 404 again.
func (m *NoticeIMDS) Clear(path string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.paths, path)
}

// Gets is how many times path was asked for with a valid token.
func (m *NoticeIMDS) Gets(path string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gets[path]
}

// Tokenless is how many metadata requests came without a valid token.
func (m *NoticeIMDS) Tokenless() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tokenless
}

// Close stops the server: from then on nothing answers.
func (m *NoticeIMDS) Close() { m.srv.Close() }

func (m *NoticeIMDS) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut || r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "bad token request", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		_, _ = w.Write([]byte(noticeToken))
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.Header.Get("X-aws-ec2-metadata-token") != noticeToken {
		m.tokenless++
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	path, ok := strings.CutPrefix(r.URL.Path, "/latest/meta-data/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	m.gets[path]++
	a, ok := m.paths[path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.WriteHeader(a.status)
	_, _ = w.Write([]byte(a.body))
}
