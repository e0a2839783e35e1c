package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/natganker/natganker/ec2/ec2test"
)

// imdsConfig is the amazon-ec2-metadata-mock configuration describing one NAT instance.
// The SDK reads the region from the identity document, so it agrees with the metadata.
func imdsConfig(w World, in Instance) map[string]any {
	return map[string]any{
		"metadata": map[string]any{"values": map[string]any{
			"instance-id":                 in.ID,
			"instance-type":               "t3.micro",
			"local-ipv4":                  in.PrivateIP,
			"local-hostname":              "ip-" + strings.ReplaceAll(in.PrivateIP, ".", "-") + ".ec2.internal",
			"hostname":                    "ip-" + strings.ReplaceAll(in.PrivateIP, ".", "-") + ".ec2.internal",
			"mac":                         in.MAC,
			"public-ipv4":                 ElasticIP,
			"placement-availability-zone": zone,
			"placement-region":            Region,
			"mac-local-ipv4s":             in.PrivateIP,
			"mac-network-interface-id":    in.ENI,
			"mac-subnet-id":               in.SubnetID,
			"mac-vpc-id":                  w.VPCID,
			"mac-vpc-ipv4-cidr-block":     VPCCIDR,
			"mac-vpc-ipv4-cidr-blocks":    VPCCIDR,
			"mac-subnet-ipv4-cidr-block":  "198.18.1.0/26",
		}},
		"dynamic": map[string]any{"values": map[string]any{
			"instance-identity-document": map[string]any{
				"accountId":        "123456789012",
				"architecture":     "x86_64",
				"availabilityZone": zone,
				"imageId":          "ami-12c6146b",
				"instanceId":       in.ID,
				"instanceType":     "t3.micro",
				"pendingTime":      "2026-11-29T00:00:00Z",
				"privateIp":        in.PrivateIP,
				"region":           Region,
				"version":          "2017-09-30",
			},
		}},
	}
}

// startIMDS runs one metadata mock inside the NAT's namespace at 169.254.169.254:80,
// IMDSv2 only, serving no notice of the instance's end, and waits until it listens.
func startIMDS(ctx context.Context, dir string, w World, in Instance, logw io.Writer) (*proc, error) {
	return startIMDSMode(ctx, dir, w, in, logw, nil)
}

// startIMDSMode is startIMDS with the mock's subcommand and flags (mode), e.g. {"spot"} for a
// spot interruption notice from the start; nil is ec2test.QuietIMDS.
func startIMDSMode(ctx context.Context, dir string, w World, in Instance, logw io.Writer, mode []string) (*proc, error) {
	if mode == nil {
		mode = ec2test.QuietIMDS
	}
	b, err := json.MarshalIndent(imdsConfig(w, in), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode metadata for %s: %w", in.Host, err)
	}
	path := filepath.Join(dir, "imds-"+in.Host+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, fmt.Errorf("write metadata for %s: %w", in.Host, err)
	}
	cmd := nsCommand(NS(in.Host), "ec2-metadata-mock", append([]string{"-n", IMDSIP, "-p", "80", "-I", "-c", path}, mode...)...)
	// The mock looks for a default config in $HOME; give it a directory of its own.
	cmd.Env = append(os.Environ(), "HOME="+dir)
	p, err := startProc("imds-"+in.Host, cmd, logw, logw, false)
	if err != nil {
		return nil, err
	}
	if err := waitListening(ctx, NS(in.Host), IMDSIP+":80", p); err != nil {
		p.Kill()
		return nil, fmt.Errorf("wait for metadata mock in %s: %w", in.Host, err)
	}
	return p, nil
}

// waitListening polls ss inside ns until a TCP socket listens on addr.
func waitListening(ctx context.Context, ns, addr string, p *proc) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := nsRun(ctx, ns, "ss", "-Hltn")
		if err == nil && strings.Contains(out, addr) {
			return nil
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("process exited: %v", p.err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("nothing listens on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
