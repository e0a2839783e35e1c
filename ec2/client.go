// Package ec2 is natganker's boundary to the EC2 API. It reads who holds a group's Elastic IP
// and routes (Observe), moves them to this instance (Claim), and learns who this instance is
// from the instance metadata service (LoadIdentity).
package ec2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	ec2sdk "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	"github.com/hashicorp/go-hclog"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxConcurrency = 64
	DefaultCallTimeout    = 5 * time.Second
	DefaultMaxAttempts    = 5
	DefaultVerifyWait     = 2 * time.Second
)

// maxBackoff caps the wait between attempts. EC2's buckets refill 5 or 20 tokens a second, so
// waiting longer than this only delays a failover.
const maxBackoff = 2 * time.Second

// Options configure a Client.
type Options struct {
	// Region is the AWS region; "" takes it from the SDK's default chain (AWS_REGION, profile).
	Region string
	// Endpoint overrides the EC2 endpoint, e.g. http://127.0.0.1:5000 for moto; "" is AWS.
	Endpoint string
	// MaxConcurrency bounds the calls a Claim makes in parallel (default 64). EC2 accepts
	// a burst of 50 mutating calls at once; a bound below that spreads a takeover that fits
	// in the burst over several round trips.
	MaxConcurrency int
	// CallTimeout is the limit for one attempt of one API call (default 5s): connecting,
	// sending, waiting for and reading the answer (it is the HTTP client's timeout). An attempt
	// that runs out of time is retried like any network error, so one call can take up to
	// MaxAttempts × CallTimeout plus the backoff between attempts; bound a whole operation with
	// its context.
	CallTimeout time.Duration
	// MaxAttempts is how often a call is tried (default 5). Throttling, 5xx, timeouts and
	// network errors are retried with exponential backoff and jitter.
	MaxAttempts int
	// VerifyWait bounds how long a Claim keeps reading back what it moved while EC2 still
	// shows the old state, before it moves it again (default 2s; negative: not at all). See
	// Claim.
	VerifyWait time.Duration
	// Logger receives, at warn level, one line for every failed attempt that will be retried
	// (the last failure is returned to the caller instead; throttling is logged at info
	// level), and actions at info level.
	Logger hclog.Logger
	// Observer, when set, is told about every API call (action, attempts, time, error), for
	// metrics.
	Observer CallObserver
}

func (o Options) withDefaults() Options {
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = DefaultMaxConcurrency
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.VerifyWait == 0 {
		o.VerifyWait = DefaultVerifyWait
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return o
}

// Client talks to EC2 for one region. It caches what does not change while an instance runs
// (its VPC and network interfaces) and is safe for concurrent use.
type Client struct {
	api     *ec2sdk.Client
	retryer aws.Retryer
	opts    Options
	log     hclog.Logger
	retries atomic.Int64
	// throttles counts the attempts EC2 refused for throttling that the pacer sent again.
	throttles atomic.Int64
	pace      *pacer

	mu        sync.Mutex
	instances map[string]instanceInfo // by instance id
	eniOwner  map[string]string       // network interface id → instance id
	subnets   map[string]string       // subnet id → IPv4 CIDR block, which never changes
}

// instanceInfo is what the cache keeps about an instance.
type instanceInfo struct {
	found      bool
	vpcID      string
	primaryENI string
	enis       []string
	attached   []attachedENI
	// multi is what a takeover points at when the instance has several interfaces, chosen
	// once (interfaces.go); nil until then.
	multi *targets
}

// New builds a client. Credentials come from the SDK's default chain (environment, shared
// files, instance role); nothing is called until the first operation.
func New(ctx context.Context, o Options) (*Client, error) {
	o = o.withDefaults()
	c := &Client{
		opts:      o,
		log:       o.Logger.Named("ec2"),
		instances: map[string]instanceInfo{},
		eniOwner:  map[string]string{},
		pace:      newPacer(mutateBurst, mutateRate, paceGuard),
	}
	var loadOpts []func(*config.LoadOptions) error
	if o.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(o.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("load aws config: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("load aws config: no region: set one in the config or AWS_REGION")
	}
	c.retryer = retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = o.MaxAttempts
		so.MaxBackoff = maxBackoff
		// A failover must not be refused by a client-side retry quota.
		so.RateLimiter = ratelimit.None
	})
	c.api = ec2sdk.NewFromConfig(cfg, func(eo *ec2sdk.Options) {
		if o.Endpoint != "" {
			eo.BaseEndpoint = aws.String(o.Endpoint)
		}
		// Keep a connection for every call of a claim's burst: the next takeover then needs
		// no new connections (and, against EC2, no TLS handshakes).
		eo.HTTPClient = awshttp.NewBuildableClient().WithTimeout(o.CallTimeout).WithTransportOptions(func(tr *http.Transport) {
			tr.MaxIdleConnsPerHost = max(tr.MaxIdleConnsPerHost, o.MaxConcurrency)
		})
		eo.Retryer = c.retryer
		eo.APIOptions = append(eo.APIOptions, c.addAttemptLog, c.addPacer)
		if o.Observer != nil {
			eo.APIOptions = append(eo.APIOptions, c.addCallObserver)
		}
	})
	return c, nil
}

// Retries returns how many times a call was retried since the client was built, the calls
// the pacer sent again after EC2 throttled them included.
func (c *Client) Retries() int64 { return c.retries.Load() }

// Throttles returns how many attempts of mutating calls EC2 refused for throttling since the
// client was built; the pacer sent each again at its next token (see pacer).
func (c *Client) Throttles() int64 { return c.throttles.Load() }

type attemptKey struct{}

// attemptState counts the attempts of one call.
type attemptState struct{ n int }

// addAttemptLog counts the attempts of every call and logs, at warn level, each failed attempt
// that will be retried, as soon as it failed: with EC2 hung, an operator learns it after one
// CallTimeout rather than when the last attempt gives up.
func (c *Client) addAttemptLog(stack *middleware.Stack) error {
	err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("natgankerAttemptState",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			return next.HandleInitialize(context.WithValue(ctx, attemptKey{}, &attemptState{}), in)
		}), middleware.Before)
	if err != nil {
		return err
	}
	// Right after Retry, so this runs once per attempt and times the attempt alone, not the
	// backoff before the next one.
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("natgankerAttemptLog",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			st, _ := ctx.Value(attemptKey{}).(*attemptState)
			if st == nil {
				return next.HandleFinalize(ctx, in)
			}
			st.n++
			if st.n > 1 {
				c.retries.Add(1)
			}
			start := time.Now()
			out, md, err := next.HandleFinalize(ctx, in)
			if err != nil && c.willRetry(ctx, st.n, err) {
				args := []any{"operation", middleware.GetOperationName(ctx),
					"attempt", fmt.Sprintf("%d/%d", st.n, c.retryer.MaxAttempts()),
					"took", time.Since(start).Round(time.Millisecond), "reason", c.failure(err), "error", err}
				if retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err).Bool() {
					// EC2 asking to slow down is expected in a large takeover and costs one
					// backoff, not an operator's attention.
					c.log.Info("ec2 call throttled; retrying", args...)
				} else {
					c.log.Warn("ec2 call attempt failed; retrying", args...)
				}
			}
			return out, md, err
		}), "Retry", middleware.After)
}

// willRetry tells whether the SDK's retry loop will make another attempt after attempt n failed
// with err, by the tests that loop applies: attempts left and a retryable error (there is no
// retry quota to run out of). It cannot see the loop's clock-skew wrapping of an error, which
// makes a few signature errors retryable; those are retried without a warning.
func (c *Client) willRetry(ctx context.Context, n int, err error) bool {
	return ctx.Err() == nil && n < c.retryer.MaxAttempts() && c.retryer.IsErrorRetryable(err)
}

// failure says in a few words why an attempt failed, for the operator reading the warning.
func (c *Client) failure(err error) string {
	var ne net.Error
	var re interface{ HTTPStatusCode() int }
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return fmt.Sprintf("no answer within the call timeout (%v)", c.opts.CallTimeout)
	case retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err).Bool():
		return "throttled by EC2"
	case errors.As(err, &re) && re.HTTPStatusCode() >= 500:
		return fmt.Sprintf("EC2 server error (HTTP %d)", re.HTTPStatusCode())
	case errors.As(err, &re) && re.HTTPStatusCode() > 0:
		return fmt.Sprintf("EC2 answered HTTP %d", re.HTTPStatusCode())
	default:
		return "could not reach EC2"
	}
}

// errorCode returns the EC2 error code of err, or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
