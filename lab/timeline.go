package lab

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"time"
)

// Event is one line of a lab timeline.
type Event struct {
	At     time.Time
	Source string // lab, vpc, nat1, nat2, client, moto…
	Text   string
}

// Timeline collects events from the lab's goroutines and prints them in time order,
// relative to a zero the caller picks.
type Timeline struct {
	mu      sync.Mutex
	events  []Event
	live    io.Writer
	zero    time.Time
	printed int // events[:printed] were written by Flush
}

// NewTimeline returns a timeline that also prints each event to live as it arrives (live
// may be nil), timed relative to zero.
func NewTimeline(live io.Writer, zero time.Time) *Timeline {
	return &Timeline{live: live, zero: zero}
}

// Add records an event.
func (t *Timeline) Add(at time.Time, source, format string, args ...any) {
	if t == nil {
		return
	}
	e := Event{At: at, Source: source, Text: fmt.Sprintf(format, args...)}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events = append(t.events, e)
	if t.live != nil {
		fmt.Fprintln(t.live, t.format(e))
	}
}

// SetZero changes the instant relative times are counted from.
func (t *Timeline) SetZero(zero time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.zero = zero
}

func (t *Timeline) format(e Event) string {
	return fmt.Sprintf("%+9.3fs  %-7s %s", e.At.Sub(t.zero).Seconds(), e.Source, e.Text)
}

// Events returns a copy of the events in time order.
func (t *Timeline) Events() []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]Event(nil), t.events...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

// Print writes the events between from and to (zero times mean unbounded) in time order.
func (t *Timeline) Print(w io.Writer, from, to time.Time) {
	for _, e := range t.Events() {
		if (!from.IsZero() && e.At.Before(from)) || (!to.IsZero() && e.At.After(to)) {
			continue
		}
		t.mu.Lock()
		line := t.format(e)
		t.mu.Unlock()
		fmt.Fprintln(w, line)
	}
}

// Flush writes the events added since the last Flush, in time order.
func (t *Timeline) Flush(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fresh := append([]Event(nil), t.events[t.printed:]...)
	t.printed = len(t.events)
	sort.SliceStable(fresh, func(i, j int) bool { return fresh[i].At.Before(fresh[j].At) })
	for _, e := range fresh {
		fmt.Fprintln(w, t.format(e))
	}
}
