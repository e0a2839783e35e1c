package lab

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/go-hclog"
)

// followInterval is how often the stand-in reads moto.
const followInterval = 20 * time.Millisecond

// OwnerChange is a moment when moto's view of who holds the EIP and all routes changed.
type OwnerChange struct {
	At    time.Time
	Owner string // instance id; "" while EIP and routes disagree
}

// follower is the VPC data-plane stand-in: it reads moto (directly, not through any
// proxy) and makes the lab network do what the VPC router and the internet gateway would:
// the client's default route, and the gateway's mapping of the Elastic IP.
type follower struct {
	c      *ec2.Client
	w      World
	tl     *Timeline
	logger hclog.Logger

	mu        sync.Mutex
	last      Snapshot
	changes   []OwnerChange
	clientVia string // host the client's default route points at, "" = unreachable
	eipOn     string // host whose public interface holds the EIP, "" = none
	applied   bool
	notify    chan struct{}
}

func newFollower(c *ec2.Client, w World, tl *Timeline, logger hclog.Logger) *follower {
	return &follower{c: c, w: w, tl: tl, logger: logger.Named("vpc"), notify: make(chan struct{})}
}

// run polls moto until ctx ends.
func (f *follower) run(ctx context.Context) {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	var lastErr string
	for {
		s, err := readSnapshot(ctx, f.c, f.w)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if err.Error() != lastErr {
				f.logger.Warn("read moto", "error", err)
				lastErr = err.Error()
			}
		} else {
			lastErr = ""
			if err := f.apply(ctx, s); err != nil && !errors.Is(err, context.Canceled) {
				f.logger.Warn("apply moto state", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// apply makes the network match one snapshot and records what changed.
func (f *follower) apply(ctx context.Context, s Snapshot) error {
	f.mu.Lock()
	first := !f.applied
	prevOwner := f.last.Owner()
	clientVia, eipOn := f.clientVia, f.eipOn
	f.mu.Unlock()

	// A route and an address that moved in the same read change together, as far as the
	// lab can make them: one after the other would cut the client off for as long as the
	// second change takes, a gap of the lab's own that a VPC does not have.
	routeHost := f.w.HostOf(s.Routes[f.w.ClientTable])
	eipHost := f.w.HostOf(s.EIPHolder)
	var routeErr, eipErr error
	var wg sync.WaitGroup
	if first || routeHost != clientVia {
		wg.Go(func() { routeErr = f.routeClient(ctx, routeHost) })
	}
	if first || eipHost != eipOn {
		wg.Go(func() { eipErr = f.placeEIP(ctx, eipHost) })
	}
	wg.Wait()
	if err := errors.Join(routeErr, eipErr); err != nil {
		return err
	}
	if first || routeHost != clientVia {
		f.tl.Add(time.Now(), "vpc", "client route table %s → %s: client default route now via %s", f.w.ClientTable, orNone(s.Routes[f.w.ClientTable]), orNone(routeHost))
		clientVia = routeHost
	}
	if first || eipHost != eipOn {
		f.tl.Add(time.Now(), "vpc", "EIP %s (%s) → %s: internet gateway now maps it to %s", ElasticIP, f.w.AllocationID, orNone(s.EIPHolder), orNone(eipHost))
		eipOn = eipHost
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clientVia, f.eipOn, f.applied = clientVia, eipOn, true
	f.last = s
	if o := s.Owner(); first || o != prevOwner {
		f.changes = append(f.changes, OwnerChange{At: s.At, Owner: o})
		if o != "" {
			f.tl.Add(s.At, "moto", "EIP and all %d route tables on %s (%s)", len(s.Routes), f.w.HostOf(o), o)
		}
		close(f.notify)
		f.notify = make(chan struct{})
	}
	return nil
}

// routeClient points the client's default route at host ("" = unreachable).
func (f *follower) routeClient(ctx context.Context, host string) error {
	var err error
	if host == "" {
		err = nsIP(ctx, NS(Client), "route", "replace", "unreachable", "default")
	} else {
		err = nsIP(ctx, NS(Client), "route", "replace", "default", "via", natIP(host), "dev", "eth0")
	}
	if err != nil {
		return fmt.Errorf("route client: %w", err)
	}
	return nil
}

// placeEIP makes the internet gateway map the Elastic IP to host ("" = nowhere), as AWS's
// does for the instance holding it.
func (f *follower) placeEIP(ctx context.Context, host string) error {
	return mapEIP(ctx, host)
}

// Changes returns the owner changes seen so far.
func (f *follower) Changes() []OwnerChange {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]OwnerChange(nil), f.changes...)
}

// Last returns the latest snapshot read from moto (its At is when it was read).
func (f *follower) Last() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Owner returns the instance moto last reported as holding everything.
func (f *follower) Owner() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last.Owner()
}

// WaitOwner waits until moto reports instance id as holding the EIP and every route and
// returns when the stand-in first saw that.
func (f *follower) WaitOwner(ctx context.Context, id string, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		f.mu.Lock()
		owner, ch := f.last.Owner(), f.notify
		var at time.Time
		if n := len(f.changes); n > 0 {
			at = f.changes[n-1].At
		}
		f.mu.Unlock()
		if owner == id {
			return at, nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("wait for %s to own EIP and routes (now %q): %w", f.w.HostOf(id), f.w.HostOf(owner), ctx.Err())
		case <-ch:
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
