package ec2

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// EC2 throttles an account's mutating calls with a token bucket: a burst of 50, refilled 5
// a second. A takeover of more routes than the burst that sends them all at once is refused
// beyond it, and the SDK's retries then back off exponentially with jitter (up to 2 s an
// attempt): calls come back in clumps, are refused again, and 200 route tables took 1.33
// times what the bucket allows. The pacer models the bucket on the client and lets a
// mutating call go when the bucket has a token for it, so calls beyond the burst are sent as
// the tokens arrive rather than refused and backed off.
//
// The model cannot see the account's other clients (the peer's agent, an operator's script)
// nor what this process did before it started. When EC2 refuses a call anyway, EC2's bucket
// is empty: the pacer empties its own and sends the call again at the next token, without
// spending one of the SDK's attempts and without a log line above debug level. Only after
// maxPacedResends refusals in a row does the refusal reach the SDK's retries.
//
// Dry runs (the permission check, permissions.go) cost a token like any mutating call. They
// yield to everything else: one goes only when the bucket is full, so a takeover always finds
// at least burst-1 tokens, and a check of many route tables trickles out at the refill rate.

// EC2's bucket for mutating actions, and the pacer's margins.
const (
	mutateBurst = 50
	mutateRate  = 5 // tokens a second
	// paceGuard is added to every wait for a token. A call sent the instant the model
	// refills could reach EC2 a moment before its bucket does, when an earlier call of the
	// burst was scheduled or carried a little later: the guard absorbs that skew. It
	// delays a takeover once, not once per call: waits are spaced by the refill rate alone.
	paceGuard = 50 * time.Millisecond
	// maxPacedResends bounds how often the pacer sends one attempt again after EC2 refused
	// it for throttling (5 s of tokens); beyond that the SDK's retries take over.
	maxPacedResends = 25
)

// pacer is a client-side model of EC2's token bucket for mutating calls.
type pacer struct {
	burst, rate float64
	guard       time.Duration
	now         func() time.Time

	mu sync.Mutex
	// tokens is what the bucket held at last; below zero it is the tokens promised to calls
	// waiting for them.
	tokens float64
	last   time.Time
}

func newPacer(burst, rate float64, guard time.Duration) *pacer {
	p := &pacer{burst: burst, rate: rate, guard: guard, now: time.Now, tokens: burst}
	p.last = p.now()
	return p
}

// refillLocked adds the tokens that arrived since last.
func (p *pacer) refillLocked(now time.Time) {
	if now.After(p.last) {
		p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
		p.last = now
	}
}

// reserve takes the next token and returns how long to wait before sending the call it pays
// for: zero while the bucket holds one, else until the token has arrived, plus the guard.
// Tokens go in the order of reserve calls.
func (p *pacer) reserve() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refillLocked(p.now())
	p.tokens--
	if p.tokens >= 0 {
		return 0
	}
	return time.Duration(-p.tokens/p.rate*float64(time.Second)) + p.guard
}

// cancel gives back the token of a reservation whose call was not sent.
func (p *pacer) cancel() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refillLocked(p.now())
	p.tokens = min(p.burst, p.tokens+1)
}

// reserveSpare takes a token only if the bucket is full, so that what is left is never less
// than burst-1; otherwise it returns how long until the bucket is full again.
func (p *pacer) reserveSpare() (ok bool, wait time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refillLocked(p.now())
	if p.tokens >= p.burst {
		p.tokens--
		return true, 0
	}
	return false, time.Duration((p.burst-p.tokens)/p.rate*float64(time.Second)) + p.guard
}

// throttled records that EC2 refused a call for throttling: its bucket is empty now.
// Tokens already promised to waiting calls stay promised.
func (p *pacer) throttled() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refillLocked(p.now())
	p.tokens = min(p.tokens, 0)
}

// wait blocks until the call may be sent: until a reserved token arrives, or, for a spare
// call (a dry run), until it can take one from a full bucket.
func (p *pacer) wait(ctx context.Context, spare bool) error {
	if !spare {
		d := p.reserve()
		if d <= 0 {
			return nil
		}
		if err := sleep(ctx, d); err != nil {
			p.cancel()
			return err
		}
		return nil
	}
	for {
		ok, d := p.reserveSpare()
		if ok {
			return nil
		}
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ticket is a token reserved ahead for the first call made with a context (withTicket): a
// claim reserves its calls' tokens in the order it wants them sent, then makes the calls in
// parallel.
type ticket struct {
	mu   sync.Mutex
	wait time.Duration // from reserved
	at   time.Time
	used bool
}

type ticketKey struct{}

// withTicket reserves a token now and attaches it to ctx for the first mutating call made
// with the returned context.
func (c *Client) withTicket(ctx context.Context) context.Context {
	t := &ticket{at: time.Now(), wait: c.pace.reserve()}
	return context.WithValue(ctx, ticketKey{}, t)
}

// take returns the time left to wait for the ticket's token, once; ok is false when the
// ticket was used already.
func (t *ticket) take() (left time.Duration, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.used {
		return 0, false
	}
	t.used = true
	return time.Until(t.at.Add(t.wait)), true
}

// release gives back a ticket no call used.
func (c *Client) release(ctx context.Context) {
	if t, _ := ctx.Value(ticketKey{}).(*ticket); t != nil {
		if _, ok := t.take(); ok {
			c.pace.cancel()
		}
	}
}

// waitTurn blocks until a mutating call made with ctx may be sent.
func (c *Client) waitTurn(ctx context.Context, spare bool) error {
	if t, _ := ctx.Value(ticketKey{}).(*ticket); t != nil && !spare {
		if left, ok := t.take(); ok {
			if left <= 0 {
				return nil
			}
			if err := sleep(ctx, left); err != nil {
				c.pace.cancel()
				return err
			}
			return nil
		}
	}
	return c.pace.wait(ctx, spare)
}

// mutating tells the calls EC2 counts in its bucket for mutating actions.
func mutating(operation string) bool {
	return !strings.HasPrefix(operation, "Describe")
}

type spareKey struct{}

// dryRun reports whether the call's input asks for a dry run.
func dryRun(params any) bool {
	switch in := params.(type) {
	case *ec2sdk.ReplaceRouteInput:
		return aws.ToBool(in.DryRun)
	case *ec2sdk.CreateRouteInput:
		return aws.ToBool(in.DryRun)
	case *ec2sdk.AssociateAddressInput:
		return aws.ToBool(in.DryRun)
	case *ec2sdk.ModifyInstanceAttributeInput:
		return aws.ToBool(in.DryRun)
	}
	return false
}

// addPacer paces every attempt of a mutating call (see pacer). It sits right after the
// attempt log, inside the SDK's retry loop: each attempt waits for its token, and a
// throttled attempt is sent again at the next token without becoming a failed attempt.
func (c *Client) addPacer(stack *middleware.Stack) error {
	err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("natgankerPaceClass",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if dryRun(in.Parameters) {
				ctx = context.WithValue(ctx, spareKey{}, true)
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.After)
	if err != nil {
		return err
	}
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("natgankerPacer",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			op := middleware.GetOperationName(ctx)
			if !mutating(op) {
				return next.HandleFinalize(ctx, in)
			}
			spare, _ := ctx.Value(spareKey{}).(bool)
			for resend := 0; ; resend++ {
				if err := c.waitTurn(ctx, spare); err != nil {
					return middleware.FinalizeOutput{}, middleware.Metadata{}, err
				}
				attempt := in
				if resend > 0 {
					if req, ok := in.Request.(*smithyhttp.Request); ok {
						req = req.Clone()
						if err := req.RewindStream(); err != nil {
							return middleware.FinalizeOutput{}, middleware.Metadata{}, err
						}
						attempt.Request = req
					}
				}
				out, md, err := next.HandleFinalize(ctx, attempt)
				if err == nil || !retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err).Bool() ||
					resend >= maxPacedResends || ctx.Err() != nil {
					return out, md, err
				}
				c.pace.throttled()
				c.retries.Add(1)
				c.throttles.Add(1)
				c.log.Debug("ec2 call throttled; sending it again at the next token", "operation", op, "resend", resend+1)
			}
		}), "natgankerAttemptLog", middleware.After)
}
