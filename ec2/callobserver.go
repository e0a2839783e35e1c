package ec2

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/aws/smithy-go/middleware"
)

// Call is one EC2 API call as a CallObserver sees it, once its last attempt is over.
type Call struct {
	// Action is the API action, e.g. "ReplaceRoute".
	Action string
	// Attempts is how many times the call was sent (retries included).
	Attempts int
	// Took is the whole call: every attempt and the backoff between them.
	Took time.Duration
	// Err is the call's error, nil when it succeeded.
	Err error
}

// Result names the outcome of the call in a word fit for a metric label: "ok", the error
// code EC2 answered with (e.g. "RequestLimitExceeded", "InvalidRouteTableID.NotFound"),
// "timeout", "canceled" or, when EC2 could not be reached, "network".
func (c Call) Result() string {
	var ne net.Error
	switch {
	case c.Err == nil:
		return "ok"
	case errorCode(c.Err) != "":
		return errorCode(c.Err)
	case errors.Is(c.Err, context.Canceled):
		return "canceled"
	case errors.Is(c.Err, context.DeadlineExceeded) || (errors.As(c.Err, &ne) && ne.Timeout()):
		return "timeout"
	default:
		return "network"
	}
}

// CallObserver is told about every EC2 API call a Client makes, after the call's last
// attempt. It is called on the calling goroutine, in the middle of a claim, so it must
// return at once (count, never wait).
type CallObserver interface {
	EC2Call(Call)
}

// addCallObserver reports each call to opts.Observer. It sits at the end of the Initialize
// step, outside the retry loop, so it times the whole call; the attempt state the attempt
// log keeps in the context tells how many attempts were made.
func (c *Client) addCallObserver(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("natgankerCallObserver",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			start := time.Now()
			out, md, err := next.HandleInitialize(ctx, in)
			call := Call{Action: middleware.GetOperationName(ctx), Attempts: 1, Took: time.Since(start), Err: err}
			if st, _ := ctx.Value(attemptKey{}).(*attemptState); st != nil && st.n > 0 {
				call.Attempts = st.n
			}
			c.opts.Observer.EC2Call(call)
			return out, md, err
		}), middleware.After)
}
