package gossip

import (
	"bytes"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// unreadableWarnEvery is how often the same address is named again in the log while its
// gossip still cannot be decrypted.
const unreadableWarnEvery = time.Minute

// keyErrors are the phrases memberlist uses when a packet or stream was sealed with another
// key, or one side encrypts and the other does not.
var keyErrors = []string{
	"no installed keys could decrypt",
	"remote state is encrypted and encryption is not configured",
	"encryption is configured but remote state is not encrypted",
}

// isKeyError reports whether a memberlist error or log line says the other side's gossip
// could not be read with this node's key.
func isKeyError(s string) bool {
	s = strings.ToLower(s)
	for _, k := range keyErrors {
		if strings.Contains(s, k) {
			return true
		}
	}
	return false
}

// Unreadable is a node whose gossip this node could not decrypt.
type Unreadable struct {
	// Addr is the IP address the packets came from.
	Addr string
	// Last is when the latest such packet arrived.
	Last time.Time
}

// keyWatch notes which addresses send gossip this node cannot decrypt and says so in the log
// in words an operator can act on, once per address and minute instead of once per packet.
type keyWatch struct {
	logger hclog.Logger

	mu     sync.Mutex
	last   map[string]time.Time // by IP: latest unreadable packet
	warned map[string]time.Time // by IP: latest warning
}

func newKeyWatch(logger hclog.Logger) *keyWatch {
	return &keyWatch{logger: logger, last: map[string]time.Time{}, warned: map[string]time.Time{}}
}

// note records an unreadable packet or stream from addr (host:port or host).
func (k *keyWatch) note(addr, detail string) {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	now := time.Now()
	k.mu.Lock()
	k.last[host] = now
	warn := now.Sub(k.warned[host]) >= unreadableWarnEvery
	if warn {
		k.warned[host] = now
	}
	k.mu.Unlock()
	if warn {
		k.logger.Error("cannot decrypt gossip from this address: that node uses a different gossip key (or none) and is not part of this cluster; give every agent the same key",
			"from", host, "detail", detail)
	}
}

// list returns the addresses heard from within the last minute, sorted.
func (k *keyWatch) list() []Unreadable {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []Unreadable
	for host, t := range k.last {
		if time.Since(t) < unreadableWarnEvery {
			out = append(out, Unreadable{Addr: host, Last: t})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// memberlistLog is the writer behind memberlist's logger: key errors go to the keyWatch,
// what tells of a path open for one protocol only to the pathWatch, and every line but key
// errors to hclog with the level memberlist wrote in the line; a line that only repeats a
// path problem already logged goes at debug.
type memberlistLog struct {
	keys   *keyWatch
	path   *pathWatch
	addrOf func(name string) string
	next   io.Writer
}

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	if isKeyError(line) {
		from := ""
		if i := strings.LastIndex(line, "from="); i >= 0 {
			from = strings.Fields(line[i+len("from="):])[0]
		}
		detail := line
		if i := strings.Index(line, "memberlist: "); i >= 0 {
			detail = line[i+len("memberlist: "):]
		}
		w.keys.note(from, detail)
		return len(p), nil
	}
	if w.path != nil && w.path.observe(line, w.addrOf) {
		if i := strings.Index(line, "] "); strings.HasPrefix(line, "[") && i > 0 {
			if _, err := io.WriteString(w.next, "[DEBUG] "+line[i+2:]+"\n"); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return w.next.Write(p)
}
