package ec2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
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

var (
	instanceIDRe = regexp.MustCompile(`^i-[0-9a-f]{1,32}$`)
	regionRe     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	zoneRe       = regexp.MustCompile(`^[a-z]{2}(-[a-z0-9]+)+[a-z]$`)
)

// CheckIdentityField reports why value cannot be the identity field called name (as the node
// block of the config calls it), or nil when it can. An answer from the metadata service and
// a value in the config are held to the same rules: each is used in EC2 filters, metadata
// paths and log lines, where a stray newline or "../" would do harm.
func CheckIdentityField(name, value string) error {
	if len(value) > 128 {
		return fmt.Errorf("is %d bytes long, more than any %s", len(value), name)
	}
	ok := false
	var want string
	switch name {
	case "instance_id":
		ok, want = instanceIDRe.MatchString(value), "look like i-0123456789abcdef0"
	case "region":
		ok, want = regionRe.MatchString(value), "be an AWS region such as us-east-1"
	case "availability_zone":
		ok, want = zoneRe.MatchString(value), "be an availability zone such as us-east-1a"
	case "local_ipv4":
		a, err := netip.ParseAddr(value)
		ok, want = err == nil && a.Is4(), "be an IPv4 address"
	case "mac":
		// The metadata service writes it lower-case with colons, and it becomes part of a
		// metadata path: only that form is taken.
		hw, err := net.ParseMAC(value)
		ok, want = err == nil && len(hw) == 6 && hw.String() == value, "be a MAC address such as 0e:12:34:56:78:9a"
	case "vpc_cidr":
		p, err := netip.ParsePrefix(value)
		ok, want = err == nil && p.Addr().Is4() && p.Masked() == p, "be an IPv4 CIDR such as 10.0.0.0/16"
	default:
		return fmt.Errorf("is not an identity field")
	}
	if !ok {
		return errors.New("must " + want)
	}
	return nil
}

// LoadIdentity asks the instance metadata service (IMDSv2; endpoint "" is the default) for
// every field not set in override and returns override completed. Each call is given 1s and two
// attempts. InstanceID, Region and LocalIPv4 are required: when one is neither overridden nor
// available the error names every such field as the node block of the config calls it.
// AvailabilityZone, MAC and VPCCIDR are left empty when unavailable. An answer that is not a
// valid value of its field (see CheckIdentityField) is an error naming the field, whether the
// field is required or not: a service that answers garbage is not to be trusted on the rest.
func LoadIdentity(ctx context.Context, endpoint string, override Identity) (Identity, error) {
	id := override
	shown := endpoint
	if shown == "" {
		shown = DefaultIMDSEndpoint
	}
	client := newIMDSClient(endpoint, imdsTimeout, imdsAttempts, true)

	var unreachable error
	failed := map[string]error{}
	var invalid, details []string
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
			if bad := CheckIdentityField(f.name, v); bad != nil {
				invalid = append(invalid, f.name)
				details = append(details, fmt.Sprintf("%s: answer %.80q %v", f.name, v, bad))
				continue
			}
			*dst = v
		case isUnreachable(err):
			unreachable = err
		default:
			failed[f.name] = err
		}
	}

	// What to set in the config: every field answered with something unusable, and every
	// required field not answered.
	var missing []string
	for _, f := range identityFields {
		if slices.Contains(invalid, f.name) {
			missing = append(missing, f.name)
			continue
		}
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
	if len(invalid) > 0 {
		hint = "these are not EC2's answers: " + hint
	} else if unreachable != nil {
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

// newIMDSClient is an IMDSv2-only metadata client for endpoint ("" is the default): each
// attempt gets timeout, attempts are retried after at most 100 ms, and keepAlive says whether
// an idle connection is kept between calls.
func newIMDSClient(endpoint string, timeout time.Duration, attempts int, keepAlive bool) *imds.Client {
	hc := awshttp.NewBuildableClient().WithTimeout(timeout)
	if !keepAlive {
		hc = hc.WithTransportOptions(func(tr *http.Transport) { tr.DisableKeepAlives = true })
	}
	return imds.New(imds.Options{
		Endpoint:   endpoint,
		HTTPClient: hc,
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = attempts
			o.MaxBackoff = 100 * time.Millisecond
			o.RateLimiter = ratelimit.None
		}),
		// IMDSv2 only: falling back to IMDSv1 would double the wait when nothing answers.
		EnableFallback: aws.FalseTernary,
		// Otherwise the client waits a flat second before its retry.
		DisableDefaultMaxBackoff: true,
		ClientEnableState:        imds.ClientEnabled,
	})
}
