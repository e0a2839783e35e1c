package ec2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Budget of each instance metadata call: a host off EC2 must not hang at start-up.
const (
	imdsTimeout  = time.Second
	imdsAttempts = 2
)

// DefaultIMDSEndpoint is where the instance metadata service answers on EC2.
const DefaultIMDSEndpoint = "http://169.254.169.254"

// Identity is who this instance is, as the instance metadata service tells.
type Identity struct {
	InstanceID, Region, AvailabilityZone, LocalIPv4, MAC string
	// VPCCIDR is the primary IPv4 CIDR block of the VPC of the interface with MAC.
	VPCCIDR string
}

// identityField is one Identity field: its config name, metadata path and whether an agent can
// run without it.
type identityField struct {
	name     string
	path     func(id Identity) string
	get      func(id *Identity) *string
	required bool
}

var identityFields = []identityField{
	{"instance_id", func(Identity) string { return "instance-id" }, func(id *Identity) *string { return &id.InstanceID }, true},
	{"region", func(Identity) string { return "placement/region" }, func(id *Identity) *string { return &id.Region }, true},
	{"availability_zone", func(Identity) string { return "placement/availability-zone" }, func(id *Identity) *string { return &id.AvailabilityZone }, false},
	{"local_ipv4", func(Identity) string { return "local-ipv4" }, func(id *Identity) *string { return &id.LocalIPv4 }, true},
	{"mac", func(Identity) string { return "mac" }, func(id *Identity) *string { return &id.MAC }, false},
	{"vpc_cidr", func(id Identity) string {
		if id.MAC == "" {
			return ""
		}
		return "network/interfaces/macs/" + id.MAC + "/vpc-ipv4-cidr-block"
	}, func(id *Identity) *string { return &id.VPCCIDR }, false},
}

// LoadIdentity asks the instance metadata service (IMDSv2; endpoint "" is the default) for
// every field not set in override and returns override completed. Each call is given 1s and two
// attempts. InstanceID, Region and LocalIPv4 are required: when one is neither overridden nor
// available the error names every such field as the node block of the config calls it.
// AvailabilityZone, MAC and VPCCIDR are left empty when unavailable.
func LoadIdentity(ctx context.Context, endpoint string, override Identity) (Identity, error) {
	id := override
	shown := endpoint
	if shown == "" {
		shown = DefaultIMDSEndpoint
	}
	client := imds.New(imds.Options{
		Endpoint:   endpoint,
		HTTPClient: awshttp.NewBuildableClient().WithTimeout(imdsTimeout),
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = imdsAttempts
			o.MaxBackoff = 100 * time.Millisecond
			o.RateLimiter = ratelimit.None
		}),
		// IMDSv2 only: falling back to IMDSv1 would double the wait when nothing answers.
		EnableFallback: aws.FalseTernary,
		// Otherwise the client waits a flat second before its retry.
		DisableDefaultMaxBackoff: true,
		ClientEnableState:        imds.ClientEnabled,
	})

	var unreachable error
	failed := map[string]error{}
	for _, f := range identityFields {
		dst := f.get(&id)
		if *dst != "" {
			continue
		}
		path := f.path(id)
		if path == "" || unreachable != nil {
			continue
		}
		v, err := getMetadata(ctx, client, path)
		switch {
		case err == nil:
			*dst = v
		case isUnreachable(err):
			unreachable = err
		default:
			failed[f.name] = err
		}
	}

	var missing []string
	var details []string
	for _, f := range identityFields {
		if !f.required || *f.get(&id) != "" {
			continue
		}
		missing = append(missing, f.name)
		if err := failed[f.name]; err != nil {
			details = append(details, fmt.Sprintf("%s: %v", f.name, err))
		}
	}
	if len(missing) == 0 {
		return id, nil
	}
	hint := fmt.Sprintf("set node { %s } in the config", strings.Join(missing, ", "))
	if unreachable != nil {
		return id, fmt.Errorf("instance metadata unreachable at %s: %w; %s", shown, unreachable, hint)
	}
	return id, fmt.Errorf("instance metadata at %s: %s; %s", shown, strings.Join(details, "; "), hint)
}

func getMetadata(ctx context.Context, c *imds.Client, path string) (string, error) {
	out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		return "", fmt.Errorf("get %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(io.LimitReader(out.Content, 64<<10))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("get %s: %w", path, errEmptyAnswer)
	}
	return v, nil
}

// errEmptyAnswer is a blank answer from a service that did answer.
var errEmptyAnswer = errors.New("empty answer")

// isUnreachable reports whether err means the service did not answer at all (as opposed to
// answering that a path does not exist).
func isUnreachable(err error) bool {
	if errors.Is(err, errEmptyAnswer) {
		return false
	}
	// The metadata client reports HTTP errors as smithy's ResponseError (which the SDK's
	// own awshttp.ResponseError wraps).
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() > 0 {
		return false
	}
	return true
}
