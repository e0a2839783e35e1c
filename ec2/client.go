// Package ec2 is natganker's boundary to the EC2 API. It reads who holds a group's Elastic IP
// and routes (Observe), moves them to this instance (Claim), and learns who this instance is
// from the instance metadata service (LoadIdentity).
package ec2

import (
	"context"
	"errors"
	"fmt"
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
	DefaultMaxConcurrency = 8
	DefaultCallTimeout    = 5 * time.Second
	DefaultMaxAttempts    = 5
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
	// MaxConcurrency bounds the route calls a Claim makes in parallel (default 8).
	MaxConcurrency int
	// CallTimeout bounds each attempt of an API call (default 5s).
	CallTimeout time.Duration
	// MaxAttempts is how often a call is tried (default 5). Throttling, 5xx and network errors
	// are retried with exponential backoff and jitter.
	MaxAttempts int
	// Logger receives retries at debug level and actions at info level.
	Logger hclog.Logger
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
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return o
}

// Client talks to EC2 for one region. It caches what does not change while an instance runs
// (its VPC and network interfaces) and is safe for concurrent use.
type Client struct {
	api     *ec2sdk.Client
	opts    Options
	log     hclog.Logger
	retries atomic.Int64

	mu        sync.Mutex
	instances map[string]instanceInfo // by instance id
	eniOwner  map[string]string       // network interface id → instance id
}

// instanceInfo is what the cache keeps about an instance.
type instanceInfo struct {
	found      bool
	vpcID      string
	primaryENI string
	enis       []string
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
	c.api = ec2sdk.NewFromConfig(cfg, func(eo *ec2sdk.Options) {
		if o.Endpoint != "" {
			eo.BaseEndpoint = aws.String(o.Endpoint)
		}
		eo.HTTPClient = awshttp.NewBuildableClient().WithTimeout(o.CallTimeout)
		eo.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = o.MaxAttempts
			so.MaxBackoff = maxBackoff
			// A failover must not be refused by a client-side retry quota.
			so.RateLimiter = ratelimit.None
		})
		eo.APIOptions = append(eo.APIOptions, c.addAttemptLog)
	})
	return c, nil
}

// Retries returns how many times a call was retried since the client was built.
func (c *Client) Retries() int64 { return c.retries.Load() }

type attemptKey struct{}

type attemptState struct {
	n       int
	lastErr error
}

// addAttemptLog counts the attempts of every call and logs each retry at debug level with the
// error that caused it.
func (c *Client) addAttemptLog(stack *middleware.Stack) error {
	err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("natgankerAttemptState",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			return next.HandleInitialize(context.WithValue(ctx, attemptKey{}, &attemptState{}), in)
		}), middleware.Before)
	if err != nil {
		return err
	}
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("natgankerAttemptLog",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			st, _ := ctx.Value(attemptKey{}).(*attemptState)
			if st != nil {
				st.n++
				if st.n > 1 {
					c.retries.Add(1)
					c.log.Debug("retrying ec2 call", "operation", middleware.GetOperationName(ctx),
						"attempt", st.n, "previous_error", st.lastErr)
				}
			}
			out, md, err := next.HandleFinalize(ctx, in)
			if st != nil {
				st.lastErr = err
			}
			return out, md, err
		}), "Retry", middleware.After)
}

// errorCode returns the EC2 error code of err, or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
